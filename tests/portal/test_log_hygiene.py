"""A logged traceback carries no secret: not a frame's local variables, not a DSN's password.

Each case runs the real settings' logging in a fresh process (as gunicorn or a worker would),
in production (JSON) and in development (console) mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import logging, secrets, django, structlog
django.setup()
secret = secrets.token_hex(12)
print("SECRET=" + secret, flush=True)

def connect(password):
    dsn = "postgresql://app:" + password + "@127.0.0.1/app"
    raise ValueError("could not connect with " + dsn)

try:
    connect(secret)
except ValueError:
    structlog.get_logger("probe").exception("probe.failed")
    logging.getLogger("some.library").exception("library saw it")
"""


@pytest.mark.parametrize("debug", ["0", "1"])
def test_a_logged_traceback_holds_no_local_or_dsn_secret(tmp_path, debug):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PORTAL_DEBUG": debug, "PORTAL_VAR_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "portal.settings.base", "PORTAL_LOG_LEVEL": "INFO",
           # Logging only: nothing dials these.
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.split("SECRET=", 1)[1].split()[0]
    logged = done.stderr
    # The traceback is there, with the frame and the redacted message ...
    assert logged.count("Traceback (most recent call last)") == 2, logged
    assert "in connect" in logged and "postgresql://app:***@127.0.0.1/app" in logged
    # ... and the password appears nowhere: neither from the message nor from the locals.
    assert secret not in logged
