"""The environment of a deployment, for tests that load the portal's settings in their own process."""

from __future__ import annotations

import os


def production_env(tmp_path) -> dict[str, str]:
    """The environment of a production deployment: portal.settings.base, PORTAL_ENVIRONMENT=prod."""
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; a deployment never has it.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.base", PORTAL_VAR_DIR=str(tmp_path), PORTAL_ENVIRONMENT="prod",
        PORTAL_SECRET_KEY="k" * 10 + "-production-secret-key-with-enough-entropy-0123456789",
        PORTAL_ALLOWED_HOSTS="portal.example.com", DATABASE_URL="postgresql://portal@127.0.0.1/portal",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    return env
