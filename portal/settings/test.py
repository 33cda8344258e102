"""Settings for the test suite: its own embedded PostgreSQL and Redis under var/test."""

import os
from pathlib import Path

os.environ.setdefault("PORTAL_VAR_DIR", str(Path(__file__).resolve().parent.parent.parent / "var" / "test"))
os.environ.setdefault("PORTAL_SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)

from portal.settings.base import *  # noqa: F403
from portal.settings.base import EMBEDDED_DATABASE, EMBEDDED_REDIS, VAR_DIR

if EMBEDDED_DATABASE:
    from portal.embedded import ensure_database, portal_cluster
    from tests.support.durability import without_fsync

    ensure_database(VAR_DIR)
    without_fsync(portal_cluster(VAR_DIR).socket_conninfo())  # the test database is thrown away
if EMBEDDED_REDIS:
    from portal.embedded import ensure_redis

    ensure_redis(VAR_DIR)

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
