"""The dispatch outbox: a task to send is a row committed with the change that calls for it.

`enqueue_apply` runs inside the approving transaction; the Celery message is sent only after
that transaction commits (`transaction.on_commit`). A send that fails (broker down) is logged
and left to `outbox_sweep`, a beat job that re-sends rows no worker has taken, and recovers
requests whose worker died (see `provisioning.liveness.stalled_requests`).
"""

from __future__ import annotations

import functools
import threading
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from audit.services import record
from portal.celery import app
from portal.choices import RequestStatus
from portal.errors import Conflict
from portal.models import ChangeRequest
from provisioning.batching import BATCH_TYPES, batch_max, database_of
from provisioning.liveness import stalled_requests
from provisioning.models import OutboxMessage

log = structlog.get_logger(__name__)

APPLY_TASK = "provisioning.apply_request"
# The first re-send waits resend_after() after the row was written or last sent; later re-sends
# of a row that is sent but still not taken (a long queue, a message lost with the broker) back
# off exponentially up to RESEND_MAX, so a backlog is not flooded with duplicates.
RESEND_MAX = timedelta(seconds=300)
SWEEP_LIMIT = 200
# Publishing must not hold an approval's web request for long when the broker is down.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def enqueue_apply(request, *, approved_at=None) -> None:
    """Queue an approved (or retried, failed) request: approved|failed → queued, outbox row,
    audit event `request.queued`; the task is sent once the surrounding transaction commits.

    approved_at: the approval of a submitted request (whose row the caller has locked and whose
    `request.approved` it has recorded) is written by the same UPDATE, submitted → queued with
    approved_at set, instead of a statement of its own just before."""
    if not connection.in_atomic_block:
        with transaction.atomic():
            return enqueue_apply(request, approved_at=approved_at)
    # Statements of the caller's transaction, with no savepoint of their own (two round trips
    # fewer); the Conflict comes before any write and leaves that transaction usable.
    now = timezone.now()
    if approved_at is not None:
        updated = ChangeRequest.objects.filter(pk=request.pk, status=RequestStatus.SUBMITTED).update(
            status=RequestStatus.QUEUED, status_detail="", approved_at=approved_at, updated_at=now)
    else:
        updated = ChangeRequest.objects.filter(
            pk=request.pk, status__in=[RequestStatus.APPROVED, RequestStatus.FAILED]
        ).update(status=RequestStatus.QUEUED, status_detail="", updated_at=now)
    if not updated:
        current = ChangeRequest.objects.filter(pk=request.pk).values_list("status", flat=True).first()
        raise Conflict(f"a {current} request cannot be queued")
    # The object now says what the row says: an API response is built from it.
    request.status, request.status_detail, request.updated_at = RequestStatus.QUEUED, "", now
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
    _publish_on_commit(message.pk, message.args)


def enqueue_retry(request, *, countdown: float) -> None:
    """Queue another attempt of a request that stays `queued` after a transient error, when no
    task of its own will retry it (it ran as another request's companion): an outbox row in
    the caller's transaction, published with `countdown` once that commits."""
    message = OutboxMessage.objects.create(
        task_name=APPLY_TASK, request=request, args={"request_id": request.pk, "plan_hash": request.plan_hash})
    message_id = message.pk
    transaction.on_commit(lambda: publish([message_id], countdown=countdown))


# The outbox rows this thread queued since the last flush: (message id, task kwargs).
_local = threading.local()


def _flush_pending() -> None:
    """Publish the rows queued on this thread, once their transaction committed: every enqueue
    registers this callback, so a transaction's first commit callback publishes all of its rows
    together (one message per batch) and the others find nothing left."""
    messages = getattr(_local, "pending", None)
    if not messages:
        return
    _local.pending = []
    if len(messages) == 1:
        # One approval (the usual case): no rows to group, so no query before the publish.
        # Should its row have been rolled back with a savepoint, the worker finds the
        # request not queued and does nothing.
        message_id, args = messages[0]
        _publish_batches([([message_id], APPLY_TASK, args)], None)
        return
    publish([message_id for message_id, _ in messages])


def _publish_on_commit(message_id: int, args: dict) -> None:
    # A rollback (of the transaction, or of the savepoint that queued a row) discards the
    # callbacks registered in it but leaves its rows listed here: they go out with the next
    # commit's rows, through publish(), which reads the rows first and so skips them.
    _local.pending = [*getattr(_local, "pending", []), (message_id, args)]
    transaction.on_commit(_flush_pending)


def _batch_key(message: OutboxMessage) -> tuple:
    """Rows whose requests one worker would apply together share a key (provisioning/batching.py)."""
    request = message.request
    if message.task_name != APPLY_TASK or request is None or request.type not in BATCH_TYPES:
        return ("alone", message.pk)
    try:
        return ("batch", request.instance_id, database_of(request))
    except Exception:  # noqa: BLE001 - a payload that does not render goes alone and fails in its task
        return ("alone", message.pk)


def _publish(task_name: str, kwargs: dict, countdown: float | None = None) -> None:
    app.send_task(task_name, kwargs=kwargs, countdown=countdown, retry=True, retry_policy=PUBLISH_RETRY_POLICY)


def publish(message_ids: list[int], countdown: float | None = None) -> tuple[int, int]:
    """Publish outbox rows no worker has taken; returns (rows sent, rows whose send failed).
    Never raises: a row the broker did not take is left to the sweeper.

    Apply rows for the same instance and database go out as one message per batch: the first
    request's, naming the others as its companions, which its worker claims with it (see
    provisioning.engine.apply). A companion that worker cannot claim is re-sent by the sweeper as usual."""
    messages = list(OutboxMessage.objects.filter(pk__in=message_ids, taken_at__isnull=True)
                    .select_related("request__instance").order_by("pk"))
    groups: dict[tuple, list[OutboxMessage]] = {}
    for message in messages:
        groups.setdefault(_batch_key(message), []).append(message)
    size = batch_max()
    chunks = [rows[i:i + size] for rows in groups.values() for i in range(0, len(rows), size)]
    batches = []
    for chunk in chunks:
        kwargs = dict(chunk[0].args)
        if len(chunk) > 1:
            kwargs["companions"] = [m.request_id for m in chunk[1:]]
        batches.append(([m.pk for m in chunk], chunk[0].task_name, kwargs))
    return _publish_batches(batches, countdown)


def _publish_batches(batches: list[tuple[list[int], str, dict]], countdown: float | None) -> tuple[int, int]:
    """Publish one message per batch of outbox rows; mark the rows of those the broker took."""
    sent: list[int] = []
    failed = 0
    for index, (message_ids, task_name, kwargs) in enumerate(batches):
        try:
            _publish(task_name, kwargs, countdown)
        except Exception as exc:  # noqa: BLE001 - any broker failure leaves the rows for the sweeper
            log.warning("outbox.send_failed", message=message_ids[0], task=task_name, error=type(exc).__name__)
            # The broker is down: the remaining rows would fail the same way.
            failed = sum(len(ids) for ids, _, _ in batches[index:])
            break
        sent.extend(message_ids)
    if sent:
        _mark_sent(sent, countdown)
    return len(sent), failed


@functools.cache
def _mark_sent_statement() -> str:
    """Rows a worker is taking at this moment are locked by its claim and skipped (they need no
    sent_at any more); the others are locked in id order. Updating them in whatever order the
    plan chose deadlocked with a worker's claim taking several of the same rows. Values are
    parameters; the table's name comes from the model."""
    return sql.SQL(
        "UPDATE {table} SET sent_at = %s, send_count = send_count + 1"
        " WHERE id IN (SELECT id FROM {table} WHERE id = ANY(%s) AND taken_at IS NULL"
        " ORDER BY id FOR UPDATE SKIP LOCKED)"
    ).format(table=sql.Identifier(OutboxMessage._meta.db_table)).as_string(None)


def _mark_sent(message_ids: list[int], countdown: float | None) -> None:
    """Bookkeeping for the sweeper; it runs after the approval committed, so it must not fail
    the approval's web request: a row left unmarked is at worst sent once more (and skipped)."""
    # A delayed message counts as sent when it is due, so the sweeper does not re-send it early.
    sent_at = timezone.now() + timedelta(seconds=countdown or 0)
    try:
        with connection.cursor() as cursor:
            cursor.execute(_mark_sent_statement(), [sent_at, message_ids])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("outbox.mark_sent_failed", messages=len(message_ids), error=type(exc).__name__)


def resend_after() -> timedelta:
    """OUTBOX_RESEND_SECONDS, read per call (override_settings works)."""
    return timedelta(seconds=settings.OUTBOX_RESEND_SECONDS)


def _due(message: OutboxMessage, now) -> bool:
    if message.sent_at is None:
        return message.created_at <= now - resend_after()
    wait = min(resend_after() * (2 ** max(message.send_count - 1, 0)), RESEND_MAX)
    return message.sent_at <= now - wait


def outbox_sweep(limit: int = SWEEP_LIMIT) -> dict[str, int]:
    """Re-send rows older than a few seconds that no worker has taken; re-dispatch requests
    whose worker died. Bounded per run; returns counts for the logs and tests."""
    now = timezone.now()
    candidates = list(
        OutboxMessage.objects.filter(taken_at__isnull=True, created_at__lte=now - resend_after()).order_by("created_at")[
            : limit * 4
        ]
    )
    due = [message.pk for message in candidates if _due(message, now)][:limit]
    sent, failed = publish(due) if due else (0, 0)
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
