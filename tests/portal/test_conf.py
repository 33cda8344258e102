"""portal.conf reads the environment typed, with clear errors; importing settings starts and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.conf import Config
from provisioning.clusters import short_socket_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "value"), [
    ("PORTAL_LOGIN_FAILURES", "abc"),
    ("PORTAL_LOGIN_FAILURES", "0"),  # below the minimum: nobody could ever sign in
    ("PORTAL_SESSION_SECONDS", "8h"),
    ("PORTAL_TRUST_PROXY", "maybe"),
    ("PORTAL_STALL_SECONDS", "soon"),
    ("PORTAL_STALL_SECONDS", "nan"),
    ("PORTAL_BASE_URL", "dbportal.example.com"),
    ("PORTAL_BASE_URL", "https://dbportal.example.com:https/"),
    ("DATABASE_URL", "mysql://portal@db/portal"),
    ("REDIS_URL", "127.0.0.1:6379"),
])
def test_a_malformed_value_is_refused_naming_its_variable(name, value):
    # given the environment sets one variable to something it cannot mean / when it is read
    with pytest.raises(ImproperlyConfigured) as refused:
        Config.from_env({name: value})
    # then the error names the variable and the value
    assert str(refused.value).startswith(f"{name}={value!r} is not ")


def test_values_are_typed_and_unset_or_empty_means_the_default():
    config = Config.from_env({
        "PORTAL_LOGIN_FAILURES": "7", "PORTAL_TRUST_PROXY": "Yes", "PORTAL_STALL_SECONDS": "2.5",
        "PORTAL_ALLOWED_TARGETS": " 10.0.0.0/8, ,db.internal ", "PORTAL_BASE_URL": "https://dbportal.example.com/",
        "PORTAL_SMTP_HOST": "", "WORKER_NICE": "",
    })
    assert config.login_failures == 7 and config.trust_proxy is True and config.stall_seconds == 2.5
    assert config.allowed_targets == ("10.0.0.0/8", "db.internal")
    assert config.base_url == "https://dbportal.example.com"
    assert config.smtp_host == "" and config.email_backend == "django.core.mail.backends.console.EmailBackend"
    assert config.worker_nice == 10
    assert config.database_url is None and config.redis_url is None  # the embedded servers


def test_defaults_that_follow_other_variables():
    demo, prod = Config.from_env({}), Config.from_env({"PORTAL_ENVIRONMENT": "prod"})
    assert (demo.secure_cookies, demo.hsts_seconds, demo.hsts_preload) == (False, 0, False)
    assert (prod.secure_cookies, prod.hsts_seconds, prod.hsts_preload) == (True, 31536000, True)
    assert Config.from_env({"PORTAL_SMTP_STARTTLS": "on"}).smtp_port == 587
    assert Config.from_env({"PORTAL_VAR_DIR": "/srv/portal"}).clusters_dir == Path("/srv/portal/clusters").resolve()


def _fresh_env(var_dir: Path) -> dict[str, str]:
    """This environment without the suite's URLs, keys and settings: the embedded defaults, a new folder."""
    dropped = ("DATABASE_URL", "REDIS_URL", "PORTAL_SECRET_KEY", "PORTAL_FERNET_KEYS", "DJANGO_SETTINGS_MODULE")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, "PORTAL_VAR_DIR": str(var_dir)}


def test_importing_the_settings_starts_nothing_and_writes_nothing(tmp_path):
    # given a state folder that does not exist yet and no DATABASE_URL / REDIS_URL (embedded defaults)
    var_dir = tmp_path / "var"
    script = ("import json, portal.settings.base as base, portal.settings.test as test; import django; "
              "django.setup(); print(json.dumps([base.EMBEDDED_DATABASE, base.EMBEDDED_REDIS, test.DATABASE_URL]))")
    # when a process imports both settings modules and sets Django up on them
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**_fresh_env(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings.test"})
    assert result.returncode == 0, result.stderr
    embedded_database, embedded_redis, url = json.loads(result.stdout.splitlines()[-1])
    assert embedded_database and embedded_redis and url.startswith("postgresql://postgres@/portal?host=")
    # then nothing was written: no state folder, no key, no socket folder
    assert not var_dir.exists()
    assert not short_socket_path(var_dir / "portal-db").exists()
    assert not short_socket_path(var_dir / "redis").exists()
    # and no server runs on it
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(var_dir) not in processes


def test_a_malformed_variable_stops_the_settings_with_its_name(tmp_path):
    env = {**_fresh_env(tmp_path / "var"), "PORTAL_LOGIN_FAILURES": "abc"}
    result = subprocess.run([sys.executable, "-c", "import portal.settings.base"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ImproperlyConfigured: PORTAL_LOGIN_FAILURES='abc' is not an integer" in result.stderr
