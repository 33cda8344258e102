"""Settings for the test suite: its own state folder (var/test), embedded PostgreSQL and Redis there.

Like base, importing this starts nothing: the test session starts the servers
(tests/fixtures/embedded.py). The defaults below go into the environment, not only into
this module, because the suite's child processes (Celery workers, `manage.py` runs) inherit
them and must use the same folder and keys.
"""

import os
from pathlib import Path

os.environ.setdefault("PORTAL_VAR_DIR", str(Path(__file__).resolve().parent.parent.parent / "var" / "test"))
os.environ.setdefault("PORTAL_SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
# A fixed key (urlsafe base64 of 32 bytes): the suite never depends on a generated key file.
os.environ.setdefault("PORTAL_FERNET_KEYS", "ZGJwb3J0YWwtdGVzdC1mZXJuZXQta2V5LTMyYnl0ZXM=")
# The audit chain's key, fixed likewise (32 bytes, urlsafe base64; audit/keys.py).
os.environ.setdefault("PORTAL_AUDIT_KEYS", "ZGJwb3J0YWwtdGVzdC1hdWRpdC1rZXktMzJieXRlcyE=")

from portal.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
DEBUG = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DATABASES["default"]["ENGINE"] = "tests.support.pgbackend"  # noqa: F405
AXES_ENABLED = True
# The same WhiteNoise, listing the static files once per process (see tests/support/static.py).
MIDDLEWARE = [
    "tests.support.static.WhiteNoiseMiddleware" if m == "whitenoise.middleware.WhiteNoiseMiddleware" else m
    for m in MIDDLEWARE  # noqa: F405
]
# Test workers are stopped and started dozens of times: a worker's warm shutdown waits for its
# pending BRPOP, which kombu bounds by polling_interval (1 s by default): ~1.3 s a stop, ~0.4 s
# at 0.1 s. Delivery is unchanged (BRPOP returns as soon as a message is there).
CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "polling_interval": 0.1}  # noqa: F405
