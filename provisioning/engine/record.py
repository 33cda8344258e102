"""Recording an attempt's outcome in the portal database, after the target committed: statuses,
Execution rows, audit events, managed state, retries with backoff, notifications, inventory."""

from __future__ import annotations

import functools
import json
from typing import Any

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from audit.services import event as audit_event
from audit.services import record_many
from portal.choices import Decision, RequestStatus, RequestType
from portal.models import Approval, ChangeRequest, Execution, NameReservation
from portal.notifications import notify_enqueue
from provisioning.engine.jobs import Job, Outcome
from provisioning.errors import TransientTargetError
from provisioning.inventory import inventory_patch, inventory_refresh_quietly
from provisioning.managed import managed_record_applied_many
from provisioning.outbox import enqueue_retry
from provisioning.sessions import end_login_sessions, end_role_sessions


def max_retries() -> int:
    """Transient failures in a row a request may have before it fails for good."""
    return int(settings.PROVISIONING_MAX_RETRIES)


def _approvers(requests: list[Any]) -> dict[int, list[str]]:
    """Who approved each request's current plan, in the order they did."""
    hashes = {r.pk: r.plan_hash for r in requests}
    found: dict[int, list[str]] = {pk: [] for pk in hashes}
    if not hashes:
        return found
    rows = (Approval.objects.filter(request_id__in=hashes, decision=Decision.APPROVE).order_by("created_at")
            .values_list("request_id", "plan_hash", "reviewer__username"))
    for request_id, hash_, reviewer in rows:
        if hashes[request_id] == hash_:
            found[request_id].append(reviewer)
    return found


def _applied_events(job: Job, approvers: list[str]) -> list[AuditEvent]:
    request, result, execution = job.request, job.result, job.execution
    statements = result.statements
    if result.outcome == Outcome.ALREADY_APPLIED:
        # An earlier attempt committed on the target but died before telling the portal:
        # its statements are recorded now, from the plan that was approved.
        statements = [{"sql": text, "ms": None, "error": ""} for text in request.plan]
    events = [
        audit_event("sql.executed", object_type="request", object_id=request.pk, instance=request.instance,
                    database=result.database, statement=row["sql"], request_id=request.pk, approvers=approvers,
                    outcome="ok", details={"position": position, "ms": row.get("ms"), "attempt": execution.attempt,
                                           "recovered": result.outcome == Outcome.ALREADY_APPLIED})
        for position, row in enumerate(statements, start=1)
        # A conditional step whose condition did not hold ran nothing: no sql.executed for it.
        if not row.get("error") and not row.get("skipped")
    ]
    events += [
        audit_event("session.terminated", object_type="role", object_id=request.payload.get("role", ""),
                    instance=request.instance, database=result.database, request_id=request.pk,
                    outcome="terminated" if session["terminated"] else "not_terminated", details=session)
        for session in job.terminated
    ]
    events.append(audit_event("request.applied", object_type="request", object_id=request.pk,
                              instance=request.instance, database=result.database, request_id=request.pk,
                              approvers=approvers, outcome="applied",
                              details={"attempt": execution.attempt, "worker": execution.worker,
                                       "execution": str(result.outcome)}))
    return events


def _transient_attempts(request: Any) -> int:
    """Consecutive transient failures since the request was last queued by a person."""
    count = 0
    for outcome in request.executions.order_by("-attempt").values_list("outcome", flat=True):
        if outcome == Outcome.RETRYING:
            count += 1
        elif outcome in (Outcome.FAILED, Outcome.APPLIED, Outcome.ALREADY_APPLIED):
            break
    return count


def _retry_countdown(request: Any) -> float:
    """Exponential backoff with full jitter, as Celery's retry_backoff computes it."""
    return get_exponential_backoff_interval(
        factor=1, retries=_transient_attempts(request), full_jitter=True,
        maximum=int(settings.PROVISIONING_RETRY_BACKOFF_MAX))


def _has_recipient(request: Any) -> bool:
    """Whether an applied/failed notification reaches anyone (portal.notifications sends those
    to the requester and the team's webhook): a system request of a team without a webhook
    costs no task."""
    return bool((request.requester is not None and request.requester.email) or request.team.webhook_url)


def _notify_on_commit(request_ids: list[int], event: str) -> None:
    """E-mail / webhook of the transitions, sent by their own task once the outcome is committed."""
    transaction.on_commit(lambda: notify_enqueue(request_ids, event))


@functools.cache
def _save_executions_statement() -> str:
    """One statement for a batch's Execution rows (Django's bulk_update builds a CASE per column
    and row, slower than the plans it records). Values are parameters; the table's name comes
    from the model."""
    return sql.SQL(
        "UPDATE {} AS e SET finished_at = v.finished_at, outcome = v.outcome,"
        " statements = v.statements::jsonb, error = v.error, sqlstate = v.sqlstate"
        " FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])"
        " AS v(id, finished_at, outcome, statements, error, sqlstate) WHERE e.id = v.id"
    ).format(sql.Identifier(Execution._meta.db_table)).as_string(None)


def _save_executions(executions: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_save_executions_statement(), [
            [e.pk for e in executions], [e.finished_at for e in executions], [str(e.outcome) for e in executions],
            [json.dumps(e.statements) for e in executions], [e.error for e in executions],
            [e.sqlstate for e in executions],
        ])


def _record_failure(job: Job, *, final: bool, now: Any, events: list[AuditEvent]) -> bool:
    """A job that ended with an error: failed, or queued again after a transient one (returned
    True). Its audit event joins `events`."""
    request, execution, error = job.request, job.execution, job.error
    retrying = isinstance(error, TransientTargetError) and not final
    detail = error.message
    if error.statement:
        detail = f"{error.message} — while running: {error.statement}"
    if retrying:
        detail = f"retrying after a transient error: {detail}"
    request.status = RequestStatus.QUEUED if retrying else RequestStatus.FAILED
    ChangeRequest.objects.filter(pk=request.pk).update(status=request.status, status_detail=detail[:4000],
                                                       updated_at=now)
    execution.outcome = Outcome.RETRYING if retrying else Outcome.FAILED
    execution.statements = job.log_rows
    execution.error = detail[:4000]
    execution.sqlstate = error.sqlstate[:5]
    events.append(audit_event(
        "request.retrying" if retrying else "request.failed", object_type="request", object_id=request.pk,
        instance=request.instance, statement=error.statement, request_id=request.pk,
        outcome=str(execution.outcome),
        details={"error": error.message, "sqlstate": error.sqlstate, "attempt": execution.attempt,
                 "worker": execution.worker}))
    return retrying


def finish(jobs: list[Job], *, leader_final: bool) -> None:
    """Record every job's outcome in one portal transaction, after the target committed: the
    request's status, its Execution row, the managed state, the audit events and the inventory.
    A companion (not the leader) that must retry gets a new outbox message with a backoff;
    the leader's retry is its task's own (autoretry)."""
    now = timezone.now()
    applied = [job for job in jobs if job.result is not None]
    for job in applied:
        if job.request.type == RequestType.REVOKE:
            # Access must really stop: sessions already open keep their privileges otherwise.
            job.terminated = end_role_sessions(job.request.instance, job.result.database,
                                               job.request.payload.get("role", ""))
        elif job.request.type == RequestType.DISABLE:
            # A login role made NOLOGIN: its sessions in every database end too (offboarding).
            job.terminated = end_login_sessions(job.request.instance, job.request.payload.get("role", ""))
    approvers = _approvers([job.request for job in applied])
    events: list[AuditEvent] = []
    notify: dict[str, list[int]] = {"applied": [], "failed": []}
    with transaction.atomic():
        if applied:
            ChangeRequest.objects.filter(pk__in=[job.request.pk for job in applied]).update(
                status=RequestStatus.APPLIED, status_detail="", applied_at=now, updated_at=now)
        for index, job in enumerate(jobs):
            request, execution = job.request, job.execution
            execution.finished_at = now
            if job.result is not None:
                request.status = RequestStatus.APPLIED
                execution.outcome = job.result.outcome
                execution.statements = job.result.statements
                # Audit appends serialise on the chain's head row until commit: they go last.
                events += _applied_events(job, approvers[request.pk])
                if _has_recipient(request):
                    notify["applied"].append(request.pk)
                continue
            final = (leader_final if index == 0 else False) or _transient_attempts(request) + 1 > max_retries()
            retrying = _record_failure(job, final=final, now=now, events=events)
            if retrying and index > 0:
                enqueue_retry(request, countdown=_retry_countdown(request))
            if not retrying and _has_recipient(request):
                notify["failed"].append(request.pk)
        _save_executions([job.execution for job in jobs])
        managed_record_applied_many([job.request for job in applied])
        # Applied (the names now live in the managed records) or failed: the names are free again.
        NameReservation.release_for([job.request for job in jobs if job.request.status != RequestStatus.QUEUED])
        record_many(events)
        for event_name, ids in notify.items():
            if ids:
                _notify_on_commit(ids, event_name)
        # In the same transaction as "applied": a request submitted right after sees the change.
        stale = inventory_patch([job.request for job in applied])
    for instance in stale:
        inventory_refresh_quietly(instance)
