"""Claiming requests in the portal database: the leader a message names, the companions its
worker applies with it (batching), and each one's Execution row for this attempt."""

from __future__ import annotations

import functools
from typing import Any

import structlog
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from audit.services import event as audit_event
from audit.services import record_many
from portal.choices import RequestStatus
from portal.models import ChangeRequest, Execution
from provisioning.batching import BATCH_TYPES, batch_max, database_of
from provisioning.engine.jobs import Outcome
from provisioning.liveness import try_locks, unlock
from provisioning.models import OutboxMessage

log = structlog.get_logger(__name__)


def _companions(leader: Any, named: list[int] | None = None) -> list[Any]:
    """Queued requests for the leader's instance and database whose message no worker has taken
    yet: the leader's worker claims them too (row lock, then liveness lock), so a burst of
    approvals is applied in a few target transactions instead of one each. `named` are those
    the outbox published with the leader's message; without them, any such request qualifies
    (a backlog of single messages). A request another worker is claiming is skipped, never
    waited for."""
    limit = batch_max() - 1
    if limit < 1 or leader.type not in BATCH_TYPES or leader.status != RequestStatus.QUEUED:
        return []
    database = database_of(leader)
    scope = ChangeRequest.objects.filter(pk__in=named) if named else ChangeRequest.objects.all()
    candidates = list(
        scope.select_for_update(of=("self",), skip_locked=True).select_related("team", "requester")
        .filter(instance_id=leader.instance_id, status=RequestStatus.QUEUED, type__in=BATCH_TYPES)
        .exclude(pk=leader.pk)
        .filter(pk__in=OutboxMessage.objects.filter(taken_at__isnull=True, request__isnull=False).values("request_id"))
        .order_by("pk")[: limit * 2]
    )
    same: list[Any] = []
    for candidate in candidates:
        candidate.instance = leader.instance
        try:
            if database_of(candidate) == database:
                same.append(candidate)
        except Exception:  # noqa: BLE001 - a payload that does not render is left to its own task
            continue
    locked = set(try_locks([c.pk for c in same[:limit]]))
    return [c for c in same[:limit] if c.pk in locked]


@functools.cache
def _claim_statement() -> str:
    """Claiming in one round trip: the requests go running, their outbox rows taken, and each gets
    the Execution row of its next attempt. Values are parameters; the tables' names come from
    the models."""
    return sql.SQL(
        "WITH claimed AS (UPDATE {request} SET status = %s, status_detail = '', updated_at = %s"
        " WHERE (id = %s AND status IN (%s, %s) AND plan_hash = %s) OR (id = ANY(%s) AND status = %s)"
        " RETURNING id, plan_hash),"
        " taken AS (UPDATE {outbox} SET taken_at = %s"
        " WHERE request_id IN (SELECT id FROM claimed) AND taken_at IS NULL)"
        " INSERT INTO {execution} (request_id, attempt, worker, plan_hash, started_at, statements, outcome, error,"
        " sqlstate)"
        " SELECT c.id, COALESCE((SELECT max(e.attempt) FROM {execution} e WHERE e.request_id = c.id), 0) + 1,"
        " %s, c.plan_hash, %s, '[]'::jsonb, '', '', '' FROM claimed c"
        " RETURNING id, request_id, attempt"
    ).format(request=sql.Identifier(ChangeRequest._meta.db_table),
             outbox=sql.Identifier(OutboxMessage._meta.db_table),
             execution=sql.Identifier(Execution._meta.db_table)).as_string(None)


def _loaded_execution(**values: Any) -> Any:
    """An Execution the claim statement just inserted, as if read from the database (Model.from_db),
    so saving or relating it never tries another INSERT; unnamed fields keep their defaults."""
    fields = Execution._meta.concrete_fields
    row = {field.attname: field.get_default() for field in fields} | values
    return Execution.from_db(connection.alias, [field.attname for field in fields],
                             [row[field.attname] for field in fields])


def _claim_rows(claimed: list[Any], *, worker: str, now: Any, hash_: str) -> list[Any] | None:
    """Mark the leader (if still queued or running with that plan) and its row-locked companions
    running; their Execution rows, in order, or None when the leader could not be claimed."""
    leader, companions = claimed[0], [r.pk for r in claimed[1:]]
    queued, running = RequestStatus.QUEUED.value, RequestStatus.RUNNING.value
    with connection.cursor() as cursor:
        cursor.execute(_claim_statement(), [running, now, leader.pk, queued, running, hash_, companions, queued,
                                            now, worker[:200], now])
        rows = {request_id: (pk, attempt) for pk, request_id, attempt in cursor.fetchall()}
    if leader.pk not in rows or len(rows) != len(claimed):
        return None
    executions = []
    for request in claimed:
        pk, attempt = rows[request.pk]
        execution = _loaded_execution(id=pk, request_id=request.pk, attempt=attempt, worker=worker[:200],
                                      plan_hash=request.plan_hash, started_at=now)
        execution.request = request
        executions.append(execution)
    return executions


class _NotClaimable(Exception):
    """Raised inside the claim's transaction to roll it back."""


def claim(request: Any, hash_: str, worker: str, named: list[int] | None = None,
          ) -> tuple[list[Any], list[int]] | None:
    """Claim the request read under its liveness lock (queued → running, or take over a running
    one whose worker is gone) with its companions; returns their Execution rows, leader first,
    and the companions' ids, whose liveness locks the caller must release. The claim's UPDATE
    checks the status again, so a request cancelled or finished since that read is left alone."""
    if request.plan_hash != hash_:
        # A message for another version of the plan; the current one has its own message.
        log.warning("apply.plan_hash_mismatch", request=request.pk)
        return None
    companions: list[Any] = []
    try:
        with transaction.atomic():
            now = timezone.now()
            recovering = request.status == RequestStatus.RUNNING
            companions = _companions(request, named)
            claimed = [request, *companions]
            executions = _claim_rows(claimed, worker=worker, now=now, hash_=hash_)
            if executions is None:
                raise _NotClaimable
            events = []
            if recovering:
                # We hold the liveness lock, so the worker that set "running" is gone.
                lost = (Execution.objects.filter(request=request, finished_at__isnull=True)
                        .exclude(pk=executions[0].pk).update(
                            finished_at=now, outcome=Outcome.WORKER_LOST,
                            error="the worker running this attempt stopped (killed or lost); another worker took over"))
                events.append(audit_event("request.recovered", object_type="request", object_id=request.pk,
                                          instance=request.instance, request_id=request.pk, outcome="recovered",
                                          details={"worker": worker, "lost_attempts": lost}))
            for r, execution in zip(claimed, executions, strict=True):
                r.status = RequestStatus.RUNNING
                execution.request = r
                events.append(audit_event("request.running", object_type="request", object_id=r.pk,
                                          instance=r.instance, request_id=r.pk, outcome="running",
                                          details={"worker": worker, "attempt": execution.attempt,
                                                   "batch": len(claimed)}))
            record_many(events)
    except _NotClaimable:
        log.info("apply.not_claimable", request=request.pk)
        unlock([c.pk for c in companions])
        return None
    except BaseException:
        unlock([c.pk for c in companions])
        raise
    return executions, [c.pk for c in companions]
