"""The dispatch outbox: a task to send is a row committed with the change that calls for it.

`enqueue_apply` runs inside the approving transaction; the Celery message is sent only after
that transaction commits (`transaction.on_commit`). A send that fails (broker down) is logged
and left to `outbox_sweep`, a beat job that re-sends rows no worker has taken, and recovers
requests whose worker died (see `provisioning.executor.stalled_requests`).
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record
from portal.choices import RequestStatus
from portal.errors import Conflict
from provisioning.models import OutboxMessage

log = structlog.get_logger(__name__)

APPLY_TASK = "provisioning.apply_request"
# The first re-send waits this long after the row was written or last sent; later re-sends of
# a row that is sent but still not taken (a long queue, a message lost with the broker) back
# off exponentially up to RESEND_MAX, so a backlog is not flooded with duplicates.
RESEND_AFTER = timedelta(seconds=getattr(settings, "OUTBOX_RESEND_SECONDS", 5))
RESEND_MAX = timedelta(seconds=300)
SWEEP_LIMIT = 200
# Publishing must not hold an approval's web request for long when the broker is down.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def enqueue_apply(request) -> None:
    """Queue an approved (or retried, failed) request: approved|failed → queued, outbox row,
    audit event `request.queued`; the task is sent once the surrounding transaction commits."""
    from portal.models import ChangeRequest

    with transaction.atomic():
        updated = ChangeRequest.objects.filter(
            pk=request.pk, status__in=[RequestStatus.APPROVED, RequestStatus.FAILED]
        ).update(status=RequestStatus.QUEUED, status_detail="", updated_at=timezone.now())
        if not updated:
            current = ChangeRequest.objects.filter(pk=request.pk).values_list("status", flat=True).first()
            raise Conflict(f"a {current} request cannot be queued")
        request.status = RequestStatus.QUEUED
        request.status_detail = ""
        message = OutboxMessage.objects.create(
            task_name=APPLY_TASK,
            request=request,
            args={"request_id": request.pk, "plan_hash": request.plan_hash},
        )
        record(
            "request.queued",
            actor=None,
            object_type="request",
            object_id=request.pk,
            instance=request.instance,
            request_id=request.pk,
            outcome="queued",
            details={"outbox": message.pk},
        )
        message_id = message.pk
        transaction.on_commit(lambda: send(message_id))


def _publish(task_name: str, kwargs: dict) -> None:
    from portal.celery import app

    app.send_task(task_name, kwargs=kwargs, retry=True, retry_policy=PUBLISH_RETRY_POLICY)


def send(message_id: int) -> bool:
    """Publish one outbox row; True when the broker took it. Never raises."""
    message = OutboxMessage.objects.filter(pk=message_id).first()
    if message is None or message.taken_at is not None:
        return False
    try:
        _publish(message.task_name, message.args)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the row for the sweeper
        log.warning("outbox.send_failed", message=message_id, task=message.task_name, error=type(exc).__name__)
        return False
    OutboxMessage.objects.filter(pk=message_id).update(sent_at=timezone.now(), send_count=F("send_count") + 1)
    return True


def _due(message: OutboxMessage, now) -> bool:
    if message.sent_at is None:
        return message.created_at <= now - RESEND_AFTER
    wait = min(RESEND_AFTER * (2 ** max(message.send_count - 1, 0)), RESEND_MAX)
    return message.sent_at <= now - wait


def outbox_sweep(limit: int = SWEEP_LIMIT) -> dict[str, int]:
    """Re-send rows older than a few seconds that no worker has taken; re-dispatch requests
    whose worker died. Bounded per run; returns counts for the logs and tests."""
    from provisioning.executor import stalled_requests

    now = timezone.now()
    candidates = list(
        OutboxMessage.objects.filter(taken_at__isnull=True, created_at__lte=now - RESEND_AFTER).order_by("created_at")[
            : limit * 4
        ]
    )
    sent = failed = 0
    for message in candidates:
        if sent + failed >= limit:
            break
        if not _due(message, now):
            continue
        if send(message.pk):
            sent += 1
        else:
            failed += 1
            # The broker is down: the remaining rows would fail the same way.
            break
    recovered = 0
    if not failed:
        for request_id, plan_hash in stalled_requests(limit=limit):
            try:
                _publish(APPLY_TASK, {"request_id": request_id, "plan_hash": plan_hash})
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("outbox.recover_failed", request=request_id, error=type(exc).__name__)
                break
            log.info("outbox.recovered", request=request_id)
            recovered += 1
    if sent or failed or recovered:
        log.info("outbox.sweep", sent=sent, failed=failed, recovered=recovered)
    return {"sent": sent, "failed": failed, "recovered": recovered}
