"""The liveness lock: a session advisory lock on the portal database that a live worker holds on
the request it applies, and the requests left without one.

A worker that dies (SIGKILL, lost host) loses its connection and with it the lock, so "status
running and nobody holds the lock" means "abandoned": no clock, no heartbeat thread. A second
delivery of the same task finds the lock taken and drops out. The engine takes and releases
these locks; the outbox sweeper asks which requests are stalled. Both sit above this module,
so neither imports the other for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Case, Func, Value, When
from django.utils import timezone

from portal.choices import RequestStatus
from portal.models import ChangeRequest, Execution
from provisioning.models import OutboxMessage

# Advisory lock namespace on the portal database (the two-int form: namespace, key), key =
# request id: "a live worker runs this".
LIVENESS_LOCK_NS = 0x0DB1


def lock_key(request_id: int) -> int:
    """The request's key in LIVENESS_LOCK_NS (the two-int form takes a 32-bit key)."""
    return int(request_id) % 2_147_483_647


def _try_lock_if_claimable(request_id: int) -> Case:
    """pg_try_advisory_lock of the request's liveness lock, tried only when the request is queued
    or running: read with the request itself, the first thing every delivery does is one round
    trip, and a finished request's lock is never taken."""
    try_lock = Func(Value(LIVENESS_LOCK_NS), Value(lock_key(request_id)), function="pg_try_advisory_lock",
                    output_field=BooleanField())
    return Case(When(status__in=[RequestStatus.QUEUED, RequestStatus.RUNNING], then=try_lock),
                default=Value(False), output_field=BooleanField())


@contextlib.contextmanager
def liveness_lock(request_id: int) -> Iterator[tuple[Any, bool]]:
    """(request or None, held): the request with its instance, team and requester, and whether
    this worker now holds its liveness lock, which it keeps until exit."""
    request = (
        ChangeRequest.objects.select_related("instance", "team", "requester")
        .annotate(liveness_held=_try_lock_if_claimable(request_id))
        .filter(pk=request_id).first()
    )
    held = bool(request is not None and request.liveness_held)
    try:
        yield request, held
    finally:
        if held:
            with contextlib.suppress(Exception), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LIVENESS_LOCK_NS, lock_key(request_id)])


def try_locks(request_ids: list[int]) -> list[int]:
    """Take the liveness locks of those requests no live worker holds; returns their ids."""
    by_key = {lock_key(pk): pk for pk in request_ids}
    if not by_key:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT k FROM unnest(%s::int[]) AS k WHERE pg_try_advisory_lock(%s, k)",
                       [list(by_key), LIVENESS_LOCK_NS])
        return [by_key[row[0]] for row in cursor.fetchall()]


def unlock(request_ids: list[int]) -> None:
    """Release liveness locks this session holds (never raises: the session's end releases them too)."""
    if not request_ids:
        return
    with contextlib.suppress(Exception), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, k) FROM unnest(%s::int[]) AS k",
                       [LIVENESS_LOCK_NS, [lock_key(pk) for pk in request_ids]])


def worker_alive(request_id: int) -> bool:
    """True when some live session holds the request's liveness lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s"
            " AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            [LIVENESS_LOCK_NS, lock_key(request_id)],
        )
        return bool(cursor.fetchone()[0])


def stalled_requests(limit: int = 100) -> list[tuple[int, str]]:
    """Requests a worker should take again: running with no live worker, or queued for a retry
    whose message was lost. Young ones are left alone (their message may still be in flight)."""
    grace = timedelta(seconds=settings.PROVISIONING_STALL_SECONDS)
    now = timezone.now()
    found: list[tuple[int, str]] = []
    running = ChangeRequest.objects.filter(status=RequestStatus.RUNNING, updated_at__lte=now - grace).values_list(
        "pk", "plan_hash"
    )[:limit]
    for pk, hash_ in running:
        if not worker_alive(pk):
            found.append((pk, hash_))
    # A queued request whose outbox rows are all taken waits for a Celery retry message; if that
    # message is gone (broker lost it, publish failed) nothing else would ever pick it up.
    waiting = (
        ChangeRequest.objects.filter(status=RequestStatus.QUEUED, updated_at__lte=now - grace)
        .exclude(pk__in=OutboxMessage.objects.filter(taken_at__isnull=True, request__isnull=False).values("request_id"))
        .values_list("pk", "plan_hash")[:limit]
    )
    backoff_max = timedelta(seconds=settings.PROVISIONING_RETRY_BACKOFF_MAX)
    for pk, hash_ in waiting:
        last = Execution.objects.filter(request_id=pk).order_by("-attempt").values_list("finished_at", flat=True).first()
        if last is not None and last <= now - backoff_max - grace and not worker_alive(pk):
            found.append((pk, hash_))
    return found[:limit]
