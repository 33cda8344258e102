"""/healthz: 200 when the portal database and the broker answer, else 503 naming what is down."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_safe

from portal.embedded import redis_client_url


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is shown redacted
        from portal.logging import redact_text

        return redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _check_broker() -> str | None:
    try:
        client = redis.Redis.from_url(redis_client_url(settings.REDIS_URL), socket_connect_timeout=2,
                                      socket_timeout=2)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__


@require_safe  # probes GET (or HEAD) it; nothing else is an answer here
def healthz(request):
    checks = {"database": _check_database(), "broker": _check_broker()}
    down = [name for name, error in checks.items() if error]
    body = {
        "status": "ok" if not down else "down",
        "down": down,
        "checks": {name: ("ok" if error is None else error) for name, error in checks.items()},
    }
    return JsonResponse(body, status=200 if not down else 503)
