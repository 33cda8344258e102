# dbportal: `make run` runs the portal, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check lint venv bench load clean-var

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# the `dbportal` command line, editable (its dependencies are in requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) manage.py run

test: $(STAMP)
	$(PY) -m pytest

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

clean-var:
	rm -rf var/test
