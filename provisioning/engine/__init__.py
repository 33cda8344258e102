"""The provisioning engine: applies one approved request's plan (and the companions claimed with
it) to its target cluster, exactly once. `apply()` is the entry point; it answers an Outcome.

The life of an attempt, each step in its own module:

1. Liveness lock (provisioning/liveness.py). The worker takes a session advisory lock on the
   *portal* database keyed by the request id and holds it for the whole attempt. A worker that
   dies loses its connection and with it the lock, so "status running and nobody holds the
   lock" means "abandoned". A second delivery of the same task finds the lock taken and drops out.
2. Claim (claims.py). A conditional UPDATE moves the request queued → running (or takes over a
   running request whose worker is gone), writes an Execution row and marks the outbox row
   taken; queued companions for the same database (provisioning/batching.py) are claimed with it.
3. Verify (here). The plan is rendered again without secrets; it must reproduce the stored plan
   and its hash, or the request fails as stale. A login role's password is fetched or created
   (provisioning/secrets.py) before the target is touched.
4. Target (target.py, over pool.py's connections). One transaction with lock_timeout,
   statement_timeout, application_name='dbportal', `pg_advisory_xact_lock` per instance
   (concurrent catalog changes otherwise fail with "tuple concurrently updated"), the marker row
   in `dbportal_meta.applied_change` (provisioning/markers.py), and the plan's statements. A
   marker already there means a previous attempt committed: nothing runs again. Steps that
   cannot run in a transaction run alone in autocommit, before (the ones leading the plan) or
   after (every other one); they are idempotent by contract.
5. Record (record.py). After the target commits, the portal database gets the outcome, the audit
   events (`sql.executed` per statement, `request.applied` / `request.failed`), the managed state
   and the inventory (provisioning/inventory.py).

Errors are sorted by SQLSTATE (provisioning/errors.py) into TransientTargetError (retried with
backoff by the task) and PermanentTargetError (the request fails at once with the statement and
the server's message).
"""

from __future__ import annotations

import structlog

from portal.choices import RequestStatus, RequestType
from portal.logging import redact_text
from portal.models import ChangeRequest
from provisioning.backups import restore
from provisioning.engine.claims import claim
from provisioning.engine.jobs import Job, Outcome, TargetResult
from provisioning.engine.record import finish
from provisioning.engine.target import apply_on_target
from provisioning.errors import PermanentTargetError, TargetError
from provisioning.liveness import liveness_lock, unlock
from provisioning.plans import Step, hook, module_for, plan_hash, plan_text
from provisioning.replicas import runner
from provisioning.secrets import password_for, secret_role
from provisioning.verification import verify_applied

__all__ = ["Outcome", "apply", "verify_plan"]

log = structlog.get_logger(__name__)


def verify_plan(request: ChangeRequest) -> list[Step]:
    """Render again without secrets: it must reproduce exactly what the reviewers approved."""
    module = module_for(request.type)
    try:
        steps = module.render(request.payload, secrets=None)
    except Exception as exc:
        raise PermanentTargetError(f"the plan could not be rendered again: {redact_text(str(exc))}") from exc
    text = plan_text(steps)
    if text != list(request.plan) or plan_hash(text) != request.plan_hash:
        raise PermanentTargetError("stale plan: rendering the payload again does not reproduce the approved plan")
    return steps


def _prepare(job: Job) -> None:
    """Verify the plan and, for a login role, get its password (committed in the portal
    database before the target transaction, so every retry reuses the same one)."""
    request = job.request
    job.steps = verify_plan(request)
    # The portal's side of the plan's assumptions (teams are not on the cluster): e.g. the owner
    # role a schema plan reuses still belongs to the requesting team.
    preconditions = hook(module_for(request.type), "preconditions")  # declared in the module's HOOKS
    problem = preconditions(request) if preconditions is not None else None
    if problem:
        raise PermanentTargetError(f"the plan's assumptions no longer hold: {problem}")
    if any(step.secret for step in job.steps):
        job.password = password_for(request, secret_role(request))


def _execute(jobs: list[Job], *, worker: str) -> None:
    """Every job ends with a result or an error; nothing here raises."""
    try:
        for job in jobs:
            try:
                _prepare(job)
            except TargetError as exc:
                job.error = exc
        live = [job for job in jobs if job.pending]
        if not live:
            return
        if live[0].request.type == RequestType.REPLICA:
            # A replica is built by its driver, not by SQL on the target; never batched.
            statements = runner.apply(live[0].request, worker=worker)
            live[0].result = TargetResult(outcome=Outcome.APPLIED, statements=statements, database="")
        elif live[0].request.type == RequestType.RESTORE:
            # A point-in-time restore (#20) builds a new cluster from a backup: never batched either.
            statements = restore.apply(live[0].request, worker=worker)
            live[0].result = TargetResult(outcome=Outcome.APPLIED, statements=statements, database="")
        else:
            apply_on_target(live, worker=worker)
    except TargetError as exc:
        for job in jobs:
            if job.pending:
                job.error = exc
    except Exception as exc:
        # A bug or an unexpected library error: fail visibly rather than leave it running.
        log.exception("apply.crashed", request=jobs[0].request.pk)
        error = PermanentTargetError(f"internal error: {type(exc).__name__}: {redact_text(str(exc))}")
        for job in jobs:
            if job.pending:
                job.error = error


def _apply_batch(request_id: int, hash_: str, *, worker: str, final_attempt: bool,
                 companions: list[int] | None) -> Outcome:
    """One batch led by `request_id`: SKIPPED or BUSY when it cannot be claimed here, else the
    leader's outcome; raises the leader's TransientTargetError when it is queued for a retry."""
    with liveness_lock(request_id) as (request, held):
        status = request.status if request is not None else None
        if status not in (RequestStatus.QUEUED, RequestStatus.RUNNING):
            # Applied, failed or cancelled (often as a companion of another worker's batch): a
            # terminal state leaves only by a person's retry, which sends a message of its own.
            log.info("apply.not_claimable", request=request_id, status=status)
            return Outcome.SKIPPED
        if not held:
            log.info("apply.busy_elsewhere", request=request_id)
            return Outcome.BUSY
        claimed = claim(request, hash_, worker, companions)
        if claimed is None:
            return Outcome.SKIPPED
        executions, companion_ids = claimed
        jobs = [Job(execution=execution) for execution in executions]
        try:
            _execute(jobs, worker=worker)
            finish(jobs, leader_final=final_attempt)
            # Revocation that proves itself: re-read the catalog after each applied revoke.
            verify_applied([job.request for job in jobs if job.result is not None])
        finally:
            unlock(companion_ids)
        leader = jobs[0]
        log.info("apply.done", request=request_id, batch=len(jobs),
                 outcome=leader.result.outcome if leader.result else Outcome.FAILED,
                 failed=sum(1 for job in jobs if job.error is not None))
        if leader.result is not None:
            return leader.result.outcome
        if leader.request.status == RequestStatus.QUEUED:
            raise leader.error
        return Outcome.FAILED


def _next_leader(companions: list[int] | None) -> tuple[int, str, list[int]] | None:
    """The first companion still queued, to lead the others: (request id, plan hash, the rest)."""
    if not companions:
        return None
    waiting = list(ChangeRequest.objects.filter(pk__in=companions, status=RequestStatus.QUEUED)
                   .order_by("pk").values_list("pk", "plan_hash"))
    if not waiting:
        return None
    (lead, lead_hash), rest = waiting[0], [pk for pk, _ in waiting[1:]]
    return lead, lead_hash, rest


def apply(*, request_id: int, plan_hash: str, worker: str, final_attempt: bool = False,
          companions: list[int] | None = None) -> Outcome:
    """Apply one request and the companions its worker claims with it. Returns the outcome of
    the batch that ran: the message's own request's, or, when that one cannot be claimed here
    (SKIPPED, BUSY), the outcome of the companions published with it, led by the first one still
    queued (they must not wait for the sweeper). Raises TransientTargetError when the task should
    retry (the request is then `queued` with the reason in status_detail); a retry of a message
    whose own request is still unclaimable leads the companions again."""
    outcome = _apply_batch(request_id, plan_hash, worker=worker, final_attempt=final_attempt, companions=companions)
    first = outcome
    while outcome in (Outcome.SKIPPED, Outcome.BUSY):
        lead = _next_leader(companions)
        if lead is None:
            break
        request_id, plan_hash, companions = lead
        log.info("apply.leading_companions", request=request_id, companions=len(companions))
        # A led batch's request is never on its task's final attempt: it has a message of its own.
        outcome = _apply_batch(request_id, plan_hash, worker=worker, final_attempt=False, companions=companions)
    return outcome if outcome not in (Outcome.SKIPPED, Outcome.BUSY) else first
