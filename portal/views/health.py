"""/healthz: 200 when the portal database and the broker answer, else 503 naming what is down.
/metrics: the Prometheus scrape, for a bearer token or an allowed address only: the portal's
own metrics and the managed instances' monitoring gauges (portal/selectors/monitoring.py)."""

from __future__ import annotations

import hmac
import ipaddress

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_safe
from django_prometheus.exports import ExportToDjangoView

from audit.siem import siem_health
from portal.embedded import redis_client_url
from portal.logging import redact_text
from portal.selectors.backups import backup_alerts
from portal.selectors.monitoring import metrics_page
from portal.services.auth import client_ip


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is shown redacted
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
    if not checks["database"]:
        # The SIEM backlog: a collector down delays forwarding (never loses it) and does not make the
        # portal unhealthy, so it is shown, not counted as down. State and lag only: this page is public.
        siem = siem_health()
        if siem:
            body["siem"] = siem
        # Instances whose backups failed or are late (#20): named, not counted as the portal being down.
        backups = backup_alerts()
        if backups:
            body["backups"] = backups
    return JsonResponse(body, status=200 if not down else 503)


def _may_scrape(request) -> bool:
    """The bearer token PORTAL_METRICS_TOKEN, or a client address inside PORTAL_METRICS_ALLOWED.

    Metrics name routes, counts and database timings: a map of the portal for anyone who can
    read them, so a scraper proves who it is or where it is.
    """
    token = settings.METRICS_TOKEN
    scheme, _, offered = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(client_ip(request) or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for entry in settings.METRICS_ALLOWED:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name or a typo: never matches an address
    return False


@require_safe  # a scrape is a GET (or HEAD)
def metrics(request):
    if not _may_scrape(request):
        raise PermissionDenied
    response = ExportToDjangoView(request)
    # The managed instances' gauges (issue #21), read from their latest sample rows at each
    # scrape: labelled by instance, the same from every web process.
    response.content = response.content + metrics_page()
    return response
