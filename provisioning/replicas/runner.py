"""Applies an approved `replica` request: the executor hands these to apply() instead of running SQL.

Same bookkeeping as a SQL plan: the request is claimed (approved/queued/running → running),
one Execution row per attempt with a line per step, the request ends `applied` or `failed`,
and each transition is an audit event. A session advisory lock on the portal database keyed
by the request makes a redelivered task (acks_late after a worker died) wait its turn instead
of building twice; the lock dies with the worker's connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import structlog
from django.db import connection, transaction
from django.utils import timezone

from audit.services import record
from portal.choices import RequestStatus
from portal.logging import redact_text
from portal.models import ChangeRequest, Execution
from provisioning.plans import module_for, plan_hash, plan_text
from provisioning.replicas.base import driver_for

log = structlog.get_logger(__name__)

# Advisory-lock namespace in the portal database for replica builds (classid, objid=request id).
_BUILD_LOCK = 0x64627262  # "dbrb"
CLAIMABLE = (RequestStatus.APPROVED, RequestStatus.QUEUED, RequestStatus.RUNNING)


def build_key(request: ChangeRequest) -> str:
    """The deterministic build folder name of a request: a retry finds what a killed try left."""
    return f"request-{request.pk}"


@contextlib.contextmanager
def _build_lock(request_id: int, wait_seconds: float = 30) -> Iterator[bool]:
    deadline = time.monotonic() + wait_seconds
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_BUILD_LOCK, request_id])
            if cursor.fetchone()[0]:
                break
            if time.monotonic() > deadline:
                yield False
                return
            time.sleep(0.2)
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_BUILD_LOCK, request_id])


def apply(request: ChangeRequest | int, *, worker: str = "") -> None:
    """Build the replica a request asks for; idempotent and safe to call again after a crash."""
    request_id = request if isinstance(request, int) else request.pk
    with _build_lock(request_id) as locked:
        if not locked:
            log.info("replica.build_busy", request=request_id)
            return
        _apply_locked(request_id, worker=worker)


def _apply_locked(request_id: int, *, worker: str) -> None:
    request = ChangeRequest.objects.select_related("instance").get(pk=request_id)
    if request.status == RequestStatus.APPLIED or request.status not in CLAIMABLE:
        return
    module = module_for(request.type)
    steps = module.render(request.payload)
    lines = plan_text(steps)
    with transaction.atomic():
        claimed = ChangeRequest.objects.filter(pk=request.pk, status__in=CLAIMABLE).update(
            status=RequestStatus.RUNNING, status_detail="", updated_at=timezone.now())
        if not claimed:
            return
        # A try that died left its Execution open: close it so the history reads true.
        Execution.objects.filter(request=request, finished_at__isnull=True).update(
            finished_at=timezone.now(), outcome="interrupted", error="the worker stopped before finishing")
        attempt = Execution.objects.filter(request=request).count() + 1
        execution = Execution.objects.create(request=request, attempt=attempt, worker=worker,
                                             plan_hash=request.plan_hash)
        record("request.running", object_type="request", object_id=request.pk, instance=request.instance,
               request_id=request.pk, details={"attempt": attempt, "worker": worker, "type": request.type})
    if plan_hash(lines) != request.plan_hash:
        _finish_failed(request, execution, [], "the plan changed since it was approved (plan hash mismatch)")
        return

    by_key = dict(_keyed_lines(request))
    done: list[dict[str, Any]] = []

    def on_step(key: str, ms: float, details: dict[str, Any]) -> None:
        done.append({"sql": by_key.get(key, f"-- {key}"), "ms": round(ms, 1), "error": ""})
        # Saved as it goes, so the request page shows progress and a crash keeps the steps done.
        Execution.objects.filter(pk=execution.pk).update(statements=list(done))

    primary = request.instance
    name = request.payload["name"]
    key = build_key(request)
    driver = driver_for(primary)
    try:
        replica = driver.create(primary=primary, name=name, key=key, request_id=request.pk, on_step=on_step)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the request, then cleaned up
        message = redact_text(str(exc)) or exc.__class__.__name__
        log.warning("replica.build_failed", request=request.pk, error=message)
        with contextlib.suppress(Exception):
            driver.abandon(primary=primary, name=name, key=key, request_id=request.pk)
        done.append({"sql": "-- build failed; leftovers removed", "ms": 0, "error": message})
        _finish_failed(request, execution, done, message)
        return
    with transaction.atomic():
        now = timezone.now()
        Execution.objects.filter(pk=execution.pk).update(finished_at=now, outcome="applied", statements=done)
        ChangeRequest.objects.filter(pk=request.pk).update(
            status=RequestStatus.APPLIED, applied_at=now, updated_at=now,
            status_detail=f"replica {replica.name} streaming on 127.0.0.1:{replica.port}")
        record("request.applied", object_type="request", object_id=request.pk, instance=primary,
               request_id=request.pk, outcome="applied",
               details={"attempt": execution.attempt, "replica": replica.name, "replica_id": replica.pk,
                        "port": replica.port})


def _keyed_lines(request: ChangeRequest) -> list[tuple[str, str]]:
    driver = driver_for(request.instance)
    return [(key, line.as_string(None)) for key, line in driver.describe(name=request.payload["name"])]


def _finish_failed(request: ChangeRequest, execution: Execution, statements: list, message: str) -> None:
    with transaction.atomic():
        now = timezone.now()
        Execution.objects.filter(pk=execution.pk).update(finished_at=now, outcome="failed", error=message,
                                                         statements=statements)
        ChangeRequest.objects.filter(pk=request.pk).update(status=RequestStatus.FAILED, status_detail=message,
                                                           updated_at=now)
        record("request.failed", object_type="request", object_id=request.pk, instance=request.instance,
               request_id=request.pk, outcome="failed", details={"attempt": execution.attempt, "error": message})
