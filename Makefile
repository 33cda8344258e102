# dbportal: `make run` runs the portal, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run sso-demo test test-stop check lint venv bench load clean-var

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# the `dbportal` command line, editable (its dependencies are in requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) manage.py run

# `make run` signed in through a real OpenID provider on this machine (docs/identity.md): users erin
# and rita in var/oidc-provider/users.json (any password), groups mapped by docs/identity-group-map.example.json.
OIDC_PROVIDER_PORT ?= 9000
sso-demo: $(STAMP)
	@OIDC_PROVIDER_PORT=$(OIDC_PROVIDER_PORT) PORTAL_URL=http://127.0.0.1:$${PORT:-8000} \
	  $(PY) -m tests.identity.provider_process & provider=$$!; trap 'kill $$provider 2>/dev/null' EXIT INT TERM; \
	until $(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(OIDC_PROVIDER_PORT)/.well-known/openid-configuration', timeout=1)" 2>/dev/null; \
	  do kill -0 $$provider || exit 1; sleep 0.5; done; \
	PORTAL_OIDC_ISSUER=http://127.0.0.1:$(OIDC_PROVIDER_PORT) PORTAL_OIDC_CLIENT_ID=dbportal-test \
	  PORTAL_OIDC_CLIENT_SECRET=test-client-secret-not-for-production PORTAL_OIDC_SCOPES="openid email profile groups" \
	  PORTAL_OIDC_NAME="local test provider" PORTAL_OIDC_GROUP_MAP=docs/identity-group-map.example.json \
	  $(PY) manage.py run

# One pytest-xdist worker per CPU (at most 4), each on its own state folder (var/test-gw0, ...):
# its own embedded PostgreSQL and Redis, clusters and replicas, so no worker sees another's roles,
# queues or files. A whole test file goes to one worker, so a module's fixtures (a fresh cluster, a
# 100k-event log) are built once. `make test TEST_WORKERS=0` runs it in one process, on var/test.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
TEST_VAR := $(or $(PORTAL_VAR_DIR),$(CURDIR)/var/test)
ifeq ($(TEST_WORKERS),0)
TEST_DIST :=
else
TEST_DIST := --dist loadfile $(foreach i,$(shell seq 0 $$(($(TEST_WORKERS) - 1))),--tx popen//env:PORTAL_VAR_DIR=$(TEST_VAR)-gw$(i))
endif
test: $(STAMP)
	$(PY) -m pytest $(TEST_DIST)

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports  # the layers and no import cycles (pyproject.toml, docs/architecture.md)
	$(PY) manage.py makemigrations --check --dry-run --settings=portal.settings.test
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null --settings=portal.settings.test
	$(PY) -m pytest -m unit -q  # the tests that need no server (tests/conftest.py sorts them)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/provisioning.py

# 50 locust users for 60 s against a fresh `manage.py run` (not part of `make test`: it measures time).
load: $(STAMP)
	$(PY) bench/load.py

# Stop the embedded servers `make test` left running for the next run (var/test, var/test-gwN).
test-stop: $(STAMP)
	$(PY) -c "from pathlib import Path; from portal.embedded import stop_database, stop_redis; \
	[(stop_redis(v), stop_database(v)) for v in [Path('var/test'), *Path('var').glob('test-gw*')] if v.is_dir()]"

clean-var: test-stop
	rm -rf var/test var/test-gw*
