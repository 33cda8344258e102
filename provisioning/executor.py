"""Applies one approved request's plan to its target cluster, exactly once.

The life of an attempt:

1. Liveness lock. The worker takes a session advisory lock on the *portal* database keyed by
   the request id and holds it for the whole attempt. A worker that dies (SIGKILL, lost host)
   loses its connection and with it the lock, so "status running and nobody holds the lock"
   means "abandoned" — no clock, no heartbeat thread. A second delivery of the same task
   finds the lock taken and drops out.
2. Claim. A conditional UPDATE moves the request queued → running (or takes over a running
   request whose worker is gone), writes an Execution row and marks the outbox row taken.
3. Verify. The plan is rendered again without secrets; it must reproduce the stored plan and
   its hash, or the request fails as stale.
4. Target. One transaction with lock_timeout, statement_timeout, application_name='dbportal',
   `pg_advisory_xact_lock` per instance (concurrent catalog changes otherwise fail with
   "tuple concurrently updated"), the marker row in `dbportal_meta.applied_change`, and the
   plan's statements. A marker already there means a previous attempt committed: nothing runs
   again. Steps that cannot run in a transaction run alone in autocommit, before (the ones
   leading the plan) or after (every other one); they are idempotent by contract.
5. Record. After the target commits, the portal database gets the outcome, the audit events
   (`sql.executed` per statement, `request.applied` / `request.failed`) and the managed state.

Errors are sorted by SQLSTATE into TransientTargetError (retried with backoff by the task) and
PermanentTargetError (the request fails at once with the statement and the server's message).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets as pysecrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from audit.services import event as audit_event
from audit.services import record_many
from portal.choices import Decision, RequestStatus, RequestType
from portal.crypto import decrypt, encrypt
from portal.logging import redact_text
from portal.models import Approval, ChangeRequest, Execution
from provisioning import executor_logins
from provisioning.connections import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, describe_error, instance_conninfo
from provisioning.errors import PermanentTargetError, TargetError, TransientTargetError, describe_user_sql_error
from provisioning.markers import INSTANCE_LOCK_NS, MARKER_DDL, portal_id
from provisioning.models import OutboxMessage, RequestSecret
from provisioning.plans import Step, module_for, plan_hash, plan_text
from provisioning.secrets import scram_verifier

log = structlog.get_logger(__name__)

# Advisory lock namespaces (the two-int form: namespace, key).
LIVENESS_LOCK_NS = 0x0DB1  # portal database, key = request id: "a live worker runs this"

# Ending an abandoned backend quickly matters: it may hold the instance lock (PG >= 14).
CLIENT_CHECK_INTERVAL = "2s"
PASSWORD_BYTES = 24  # token_urlsafe(24) -> 32 characters

# SQLSTATEs worth a retry. Class 08 (connection exception) is matched by prefix.
TRANSIENT_SQLSTATES = {
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "55P03",  # lock_not_available (lock_timeout)
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "53300",  # too_many_connections
}
TRANSIENT_MESSAGES = ("tuple concurrently updated",)

OUTCOME_APPLIED = "applied"
OUTCOME_ALREADY = "already_applied"
OUTCOME_FAILED = "failed"
OUTCOME_RETRYING = "retrying"
OUTCOME_LOST = "worker_lost"


def max_retries() -> int:
    return int(getattr(settings, "PROVISIONING_MAX_RETRIES", 8))


# --- liveness lock on the portal database -------------------------------------------------------
def _lock_key(request_id: int) -> int:
    return int(request_id) % 2_147_483_647


# Only a queued or running request's liveness lock is tried: read with the request itself,
# the first thing every delivery of a message does is one round trip.
_TRY_LOCK_IF_CLAIMABLE = (
    "CASE WHEN portal_changerequest.status IN (%s, %s) THEN pg_try_advisory_lock(%s, %s) ELSE false END"
)


@contextlib.contextmanager
def liveness_lock(request_id: int) -> Iterator[tuple[Any, bool]]:
    """(request or None, held): the request with its instance, team and requester, and whether
    this worker now holds its liveness lock, which it keeps until exit."""
    request = (
        ChangeRequest.objects.select_related("instance", "team", "requester")
        .annotate(liveness_held=RawSQL(_TRY_LOCK_IF_CLAIMABLE, [
            RequestStatus.QUEUED.value, RequestStatus.RUNNING.value, LIVENESS_LOCK_NS, _lock_key(request_id)]))
        .filter(pk=request_id).first()
    )
    held = bool(request is not None and request.liveness_held)
    try:
        yield request, held
    finally:
        if held:
            with contextlib.suppress(Exception), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LIVENESS_LOCK_NS, _lock_key(request_id)])


def worker_alive(request_id: int) -> bool:
    """True when some live session holds the request's liveness lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s"
            " AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            [LIVENESS_LOCK_NS, _lock_key(request_id)],
        )
        return bool(cursor.fetchone()[0])


def stalled_requests(limit: int = 100) -> list[tuple[int, str]]:
    """Requests a worker should take again: running with no live worker, or queued for a retry
    whose message was lost. Young ones are left alone (their message may still be in flight)."""
    grace = timedelta(seconds=getattr(settings, "PROVISIONING_STALL_SECONDS", 10))
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
    backoff_max = timedelta(seconds=getattr(settings, "PROVISIONING_RETRY_BACKOFF_MAX", 600))
    for pk, hash_ in waiting:
        last = Execution.objects.filter(request_id=pk).order_by("-attempt").values_list("finished_at", flat=True).first()
        if last is not None and last <= now - backoff_max - grace and not worker_alive(pk):
            found.append((pk, hash_))
    return found[:limit]


# --- plan steps -----------------------------------------------------------------------------------
@dataclass
class SplitPlan:
    before: list[int] = field(default_factory=list)  # indexes of non-transactional leading steps
    inside: list[int] = field(default_factory=list)  # indexes run in the one transaction
    after: list[int] = field(default_factory=list)  # every other non-transactional step


def split_plan(steps: list[Step]) -> SplitPlan:
    split = SplitPlan()
    seen_transactional = False
    for index, step in enumerate(steps):
        if step.transactional:
            seen_transactional = True
            split.inside.append(index)
        elif not seen_transactional:
            split.before.append(index)
        else:
            split.after.append(index)
    return split


def classify(exc: BaseException, statement: str = "", *, user_sql: bool = False) -> TargetError:
    """Sort a psycopg error into transient or permanent, with a message fit for the UI.

    `user_sql`: the statement is a requester's; the message then names only the condition and
    position (provisioning.errors.describe_user_sql_error), never the server's text."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    primary = (getattr(diag, "message_primary", None) or "").strip() if diag is not None else ""
    message = redact_text(primary or describe_error(exc) or type(exc).__name__)
    if user_sql and sqlstate:
        message = describe_user_sql_error(exc)
    elif sqlstate:
        message = f"{message} (SQLSTATE {sqlstate})"
    transient = (
        sqlstate in TRANSIENT_SQLSTATES
        or sqlstate.startswith("08")
        or (sqlstate == "XX000" and any(m in str(exc) for m in TRANSIENT_MESSAGES))
        # No SQLSTATE: the connection could not be made or broke (refused, reset, closed).
        or (not sqlstate and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            and "password authentication failed" not in str(exc) and "does not exist" not in str(exc))
    )
    kind = TransientTargetError if transient else PermanentTargetError
    return kind(message, sqlstate=sqlstate, statement=statement)


# --- secrets ---------------------------------------------------------------------------------------
def _password_for(request: Any, role: str) -> str:
    """The request's generated password: created and committed in the portal database before
    the target transaction, reused by every retry, so one password exists and none is lost."""
    secret = RequestSecret.objects.filter(request=request).first()
    if secret is not None and secret.encrypted:
        return decrypt(secret.encrypted)
    password = pysecrets.token_urlsafe(PASSWORD_BYTES)
    if secret is None:
        try:
            with transaction.atomic():
                RequestSecret.objects.create(request=request, role=role, encrypted=encrypt(password))
        except IntegrityError:
            # Another attempt created it first: use theirs.
            return decrypt(RequestSecret.objects.get(request=request).encrypted)
    else:
        # Wiped without a marker on the target: that password never reached the cluster.
        RequestSecret.objects.filter(pk=secret.pk).update(
            encrypted=encrypt(password), revealed_at=None, wiped_at=None, created_at=timezone.now()
        )
    return password


def _secret_role(request: Any) -> str:
    role = (request.payload or {}).get("name")
    if request.type != RequestType.ROLE or not role:
        raise PermanentTargetError("the plan has a secret step but the request creates no role")
    return str(role)


# --- the target transaction -------------------------------------------------------------------
@dataclass
class TargetResult:
    outcome: str  # applied | already_applied
    statements: list[dict]
    database: str


def _run_step(conn: psycopg.Connection, statement: sql.Composable, shown: str, log_rows: list[dict], *,
              user_sql: bool = False) -> None:
    started = time.perf_counter()
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        error = classify(exc, shown, user_sql=user_sql)
        log_rows.append({"sql": shown, "ms": round((time.perf_counter() - started) * 1000, 2), "error": error.message})
        raise error from exc
    log_rows.append({"sql": shown, "ms": round((time.perf_counter() - started) * 1000, 2), "error": ""})


def _check_assertion(conn: psycopg.Connection, step: Step, shown: str, log_rows: list[dict]) -> None:
    """An assertion step (Step.asserts): its query must answer true inside the plan's transaction,
    else the cluster changed since the review and the plan stops, permanently, naming what changed."""
    started = time.perf_counter()
    try:
        holds = conn.execute(step.statement).fetchone()[0] is True
    except psycopg.Error as exc:
        error = classify(exc, shown)
        log_rows.append({"sql": shown, "ms": round((time.perf_counter() - started) * 1000, 2), "error": error.message})
        raise error from exc
    error_text = "" if holds else (f"the cluster changed since the plan was approved: it is no longer true that "
                                   f"{step.asserts}; nothing of this plan was applied")
    log_rows.append({"sql": shown, "ms": round((time.perf_counter() - started) * 1000, 2), "error": error_text})
    if not holds:
        raise PermanentTargetError(error_text, statement=shown)


def _run_autocommit_step(conn: psycopg.Connection, step: Step, shown: str, log_rows: list[dict]) -> None:
    """A step outside the plan's transaction: run only when its condition holds, and an index build
    under its own statement_timeout (restored after: the connection is reused)."""
    if step.only_if is not None:
        try:
            holds = bool(conn.execute(step.only_if).fetchone()[0])
        except psycopg.Error as exc:
            error = classify(exc, shown)
            log_rows.append({"sql": shown, "ms": 0.0, "error": error.message})
            raise error from exc
        if not holds:
            log_rows.append({"sql": shown, "ms": 0.0, "error": "", "skipped": "condition not met"})
            return
    if not step.index_build:
        _run_step(conn, step.statement, shown, log_rows, user_sql=step.user_sql)
        return
    timeout_ms = int(settings.PROVISIONING_INDEX_STATEMENT_TIMEOUT_MS)
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
    try:
        _run_step(conn, step.statement, shown, log_rows, user_sql=step.user_sql)
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("RESET statement_timeout")  # back to the connection's -c statement_timeout


def _prepare_session(conn: psycopg.Connection) -> None:
    if conn.info.server_version >= 140000:
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL)))


# Admin connections kept per worker process: a new SCRAM connection costs more than a small plan.
# Reused only when idle and healthy; any error closes the connection instead of returning it.
_TARGET_CONNECTIONS: dict[tuple, tuple[psycopg.Connection, float]] = {}
TARGET_IDLE_MAX_SECONDS = 60.0
TARGET_PROBE_AFTER_SECONDS = 2.0


def _connection_key(instance: Any, database: str) -> tuple:
    secret = hashlib.sha256((instance.admin_password_encrypted or "").encode()).hexdigest()
    return (instance.pk, database, instance.host, int(instance.port), instance.admin_user, secret)


def _open_target(instance: Any, database: str) -> psycopg.Connection:
    params = instance_conninfo(instance, database)
    params["options"] = f"-c lock_timeout={int(LOCK_TIMEOUT_MS)} -c statement_timeout={int(STATEMENT_TIMEOUT_MS)}"
    conn = psycopg.connect(**params, autocommit=True)
    _prepare_session(conn)
    return conn


@contextlib.contextmanager
def target_connection(instance: Any, database: str) -> Iterator[psycopg.Connection]:
    key = _connection_key(instance, database)
    conn, last_used = _TARGET_CONNECTIONS.pop(key, (None, 0.0))
    if conn is not None:
        idle = time.monotonic() - last_used
        usable = (not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                  and idle < TARGET_IDLE_MAX_SECONDS)
        if usable and idle > TARGET_PROBE_AFTER_SECONDS:
            # Probed only after a pause: within a burst a round trip per apply is too dear, and
            # the rare connection lost meanwhile fails its first statement as a transient error.
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                usable = False
        if not usable:
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
    if conn is None:
        conn = _open_target(instance, database)
    healthy = False
    try:
        yield conn
        healthy = True
    finally:
        if healthy and not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            _TARGET_CONNECTIONS[key] = (conn, time.monotonic())
        else:
            with contextlib.suppress(Exception):
                conn.close()


@contextlib.contextmanager
def _executor_login_connection(request: Any, database: str) -> Iterator[psycopg.Connection]:
    with executor_logins.connect(request.instance, request.team, database, owner_role=request.payload["owner_role"],
                                 lock_timeout_ms=LOCK_TIMEOUT_MS, statement_timeout_ms=STATEMENT_TIMEOUT_MS,
                                 autocommit=True) as conn:
        _prepare_session(conn)
        yield conn


def _plan_connection(request: Any, database: str) -> contextlib.AbstractContextManager[psycopg.Connection]:
    """Requester SQL (DDL) runs over the team's executor login, never the admin login; plans the
    portal renders itself run over the (pooled) admin connection. DDL is never batched, so a
    batch is always of one kind."""
    if request.type == RequestType.DDL:
        return _executor_login_connection(request, database)
    return target_connection(request.instance, database)


@dataclass
class Job:
    """One claimed request inside an attempt: its execution, verified plan and outcome."""

    execution: Any
    steps: list[Step] = field(default_factory=list)
    password: str | None = None  # the generated password of a login role, set before the target
    log_rows: list[dict] = field(default_factory=list)
    result: TargetResult | None = None
    error: TargetError | None = None
    terminated: list[dict] = field(default_factory=list)

    @property
    def request(self) -> Any:
        return self.execution.request

    @property
    def pending(self) -> bool:
        return self.result is None and self.error is None


def database_of(request: Any) -> str:
    return module_for(request.type).database(request.payload) or request.instance.database


class _TargetTransaction:
    """The one transaction on the target, under the instance lock. BEGIN travels with the lock's
    statement and COMMIT with the last marker (simple-protocol statements, values as literals),
    so a one-plan apply costs two round trips fewer than a driver-managed transaction. Savepoints
    inside it still come from psycopg (conn.transaction() sees the open transaction)."""

    def __init__(self, conn: psycopg.Connection, instance_pk: int, keys: list[tuple[int, str]]) -> None:
        """BEGIN, the instance lock and the markers of `keys` (request id, plan hash) already there,
        in one round trip once the marker table exists; the first apply on a database finds it
        missing (an error that ends that try) and begins again to create it."""
        self.conn = conn
        self.done = False
        begin = sql.SQL("BEGIN; SELECT to_regclass('dbportal_meta.applied_change') FROM pg_advisory_xact_lock({}, {})"
                        ).format(sql.Literal(INSTANCE_LOCK_NS), sql.Literal(int(instance_pk)))
        markers = sql.SQL(
            "SELECT request_id FROM dbportal_meta.applied_change WHERE portal = {} AND (request_id, plan_hash) IN ({})"
        ).format(sql.Literal(portal_id()),
                 sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(int(pk)), sql.Literal(hash_))
                                    for pk, hash_ in keys))
        try:
            cursor = conn.execute(sql.SQL("{}; {}").format(begin, markers) if keys else begin)
        except psycopg.errors.UndefinedTable:
            conn.execute("ROLLBACK")
            cursor = conn.execute(begin)
            keys = []
        cursor.nextset()
        self.marker_table = cursor.fetchone()[0] is not None
        self.already: set[int] = set()
        if keys:
            cursor.nextset()
            self.already = {row[0] for row in cursor.fetchall()}

    def mark(self, request: Any, worker: str, *, commit: bool) -> None:
        """The plan's marker; with `commit`, the transaction ends in the same round trip."""
        insert = sql.SQL(
            "INSERT INTO dbportal_meta.applied_change (portal, request_id, plan_hash, worker) VALUES ({}, {}, {}, {})"
        ).format(sql.Literal(portal_id()), sql.Literal(int(request.pk)), sql.Literal(request.plan_hash),
                 sql.Literal(worker[:200]))
        self.conn.execute(sql.SQL("{}; COMMIT").format(insert) if commit else insert)
        self.done = commit

    def commit(self) -> None:
        if not self.done:
            self.conn.execute("COMMIT")
            self.done = True

    def rollback(self) -> None:
        if not self.conn.closed and self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("ROLLBACK")


@contextlib.contextmanager
def _target_transaction(conn: psycopg.Connection, instance_pk: int, keys: list[tuple[int, str]],
                        ) -> Iterator[_TargetTransaction]:
    transaction_ = _TargetTransaction(conn, instance_pk, keys)
    try:
        yield transaction_
        transaction_.commit()
    except BaseException:
        transaction_.rollback()
        raise


def _run_plan(conn: psycopg.Connection, job: Job, *, worker: str, tx: _TargetTransaction, commit: bool) -> None:
    """The plan's transactional steps and its marker, inside the caller's transaction."""
    request = job.request
    shown = plan_text(job.steps)
    run_steps = job.steps
    if job.password is not None:
        _secret_role(request)  # a secret step belongs to a role request only
        verifier = scram_verifier(job.password)
        run_steps = module_for(request.type).render(request.payload, secrets={"password": verifier})
        if len(run_steps) != len(job.steps):
            raise PermanentTargetError("the plan rendered with its secret has a different shape")
    for index in split_plan(job.steps).inside:
        if job.steps[index].asserts is not None:
            _check_assertion(conn, job.steps[index], shown[index], job.log_rows)
            continue
        _run_step(conn, run_steps[index].statement, shown[index], job.log_rows, user_sql=job.steps[index].user_sql)
    tx.mark(request, worker, commit=commit)


def _run_loose_steps(conn: psycopg.Connection, jobs: list[Job], part: str) -> None:
    """Steps that cannot run in a transaction (`before` or `after` the plan's one), in
    autocommit; idempotent by contract, so a retry may run them again. A failure ends its job."""
    for job in jobs:
        if not job.pending:
            continue
        shown = plan_text(job.steps)
        try:
            for index in getattr(split_plan(job.steps), part):
                _run_autocommit_step(conn, job.steps[index], shown[index], job.log_rows)
        except TargetError as exc:
            if conn.closed or conn.broken:
                raise
            job.error = exc


def apply_on_target(jobs: list[Job], *, worker: str) -> None:
    """Run the claimed, verified plans of `jobs` (one instance, one database) on the target and
    set each job's result or error.

    One transaction under the instance lock, each plan with its marker. A plan whose marker is
    already there was committed by an earlier attempt and runs nothing. With several jobs the
    first try runs them all straight through (no savepoints: two round trips fewer per plan);
    if one fails, that one ends with its error and the others run again in a new transaction,
    each in a savepoint, so any further failure rolls back alone."""
    first = jobs[0].request
    instance, database = first.instance, database_of(first)
    already: set[int] = set()
    try:
        with _plan_connection(first, database) as conn:
            _run_loose_steps(conn, jobs, "before")
            isolate = False
            while True:
                live = [job for job in jobs if job.pending]
                if not live:
                    break
                running: Job | None = None
                try:
                    keys = [(job.request.pk, job.request.plan_hash) for job in live]
                    with _target_transaction(conn, instance.pk, keys) as tx:
                        already = tx.already
                        if not tx.marker_table:
                            for ddl in MARKER_DDL:
                                conn.execute(ddl)
                        to_run = [job for job in live if job.request.pk not in already]
                        for job in to_run:
                            running = job
                            if not isolate:
                                _run_plan(conn, job, worker=worker, tx=tx, commit=job is to_run[-1])
                                continue
                            try:
                                with conn.transaction():  # a savepoint: this plan alone rolls back
                                    _run_plan(conn, job, worker=worker, tx=tx, commit=False)
                            except TargetError as exc:
                                if conn.closed or conn.broken:
                                    raise
                                job.error = exc
                        running = None
                    break
                except TargetError as exc:
                    if isolate or running is None or len(live) == 1 or conn.closed or conn.broken:
                        raise
                    # The plan that failed ends with its error; the others run again, isolated.
                    running.error = exc
                    for job in live:
                        if job is not running:
                            job.log_rows.clear()
                    isolate = True
            _run_loose_steps(conn, jobs, "after")
    except TargetError as exc:
        for job in jobs:
            if job.pending:
                job.error = exc
        return
    except psycopg.Error as exc:
        # Connection failures, and COMMIT itself (an unknown outcome: the marker settles it).
        error = classify(exc)
        for job in jobs:
            if job.pending:
                job.error = error
        return
    for job in jobs:
        if job.pending:
            outcome = OUTCOME_ALREADY if job.request.pk in already else OUTCOME_APPLIED
            job.result = TargetResult(outcome=outcome, statements=job.log_rows, database=database)


# --- claim and record in the portal database -------------------------------------------------
# Request types applied together, in one target transaction, when several wait for the same
# database: transactional catalog changes of a few statements, where a transaction per request
# would cost more in round trips and commits than the plans themselves.
BATCH_TYPES = (RequestType.ROLE, RequestType.SCHEMA, RequestType.GRANT, RequestType.REVOKE)


def batch_max() -> int:
    return max(1, int(getattr(settings, "PROVISIONING_BATCH_MAX", 50)))


def _try_locks(request_ids: list[int]) -> list[int]:
    """Take the liveness locks of those requests no live worker holds; returns their ids."""
    by_key = {_lock_key(pk): pk for pk in request_ids}
    if not by_key:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT k FROM unnest(%s::int[]) AS k WHERE pg_try_advisory_lock(%s, k)",
                       [list(by_key), LIVENESS_LOCK_NS])
        return [by_key[row[0]] for row in cursor.fetchall()]


def _unlock(request_ids: list[int]) -> None:
    if not request_ids:
        return
    with contextlib.suppress(Exception), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, k) FROM unnest(%s::int[]) AS k",
                       [LIVENESS_LOCK_NS, [_lock_key(pk) for pk in request_ids]])


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
    locked = set(_try_locks([c.pk for c in same[:limit]]))
    return [c for c in same[:limit] if c.pk in locked]


# Claiming in one round trip: the requests go running, their outbox rows taken, and each gets
# the Execution row of its next attempt. Values are parameters; the text is constant.
_CLAIM = (
    "WITH claimed AS (UPDATE portal_changerequest SET status = %s, status_detail = '', updated_at = %s"
    " WHERE (id = %s AND status IN (%s, %s) AND plan_hash = %s) OR (id = ANY(%s) AND status = %s)"
    " RETURNING id, plan_hash),"
    " taken AS (UPDATE provisioning_outboxmessage SET taken_at = %s"
    " WHERE request_id IN (SELECT id FROM claimed) AND taken_at IS NULL)"
    " INSERT INTO portal_execution (request_id, attempt, worker, plan_hash, started_at, statements, outcome, error,"
    " sqlstate)"
    " SELECT c.id, COALESCE((SELECT max(e.attempt) FROM portal_execution e WHERE e.request_id = c.id), 0) + 1,"
    " %s, c.plan_hash, %s, '[]'::jsonb, '', '', '' FROM claimed c"
    " RETURNING id, request_id, attempt"
)


def _claim_rows(claimed: list[Any], *, worker: str, now: Any, hash_: str) -> list[Any] | None:
    """Mark the leader (if still queued or running with that plan) and its row-locked companions
    running; their Execution rows, in order, or None when the leader could not be claimed."""
    leader, companions = claimed[0], [r.pk for r in claimed[1:]]
    queued, running = RequestStatus.QUEUED.value, RequestStatus.RUNNING.value
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [running, now, leader.pk, queued, running, hash_, companions, queued,
                                now, worker[:200], now])
        rows = {request_id: (pk, attempt) for pk, request_id, attempt in cursor.fetchall()}
    if leader.pk not in rows or len(rows) != len(claimed):
        return None
    executions = []
    for request in claimed:
        pk, attempt = rows[request.pk]
        execution = Execution(pk=pk, request=request, attempt=attempt, worker=worker[:200],
                              plan_hash=request.plan_hash, started_at=now)
        execution._state.adding = False
        execution._state.db = connection.alias
        executions.append(execution)
    return executions


class _NotClaimable(Exception):
    """Raised inside the claim's transaction to roll it back."""


def _claim(request: Any, hash_: str, worker: str, named: list[int] | None = None,
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
                            finished_at=now, outcome=OUTCOME_LOST,
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
        _unlock([c.pk for c in companions])
        return None
    except BaseException:
        _unlock([c.pk for c in companions])
        raise
    return executions, [c.pk for c in companions]


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
    if result.outcome == OUTCOME_ALREADY:
        # An earlier attempt committed on the target but died before telling the portal:
        # its statements are recorded now, from the plan that was approved.
        statements = [{"sql": text, "ms": None, "error": ""} for text in request.plan]
    events = [
        audit_event("sql.executed", object_type="request", object_id=request.pk, instance=request.instance,
                    database=result.database, statement=row["sql"], request_id=request.pk, approvers=approvers,
                    outcome="ok", details={"position": position, "ms": row.get("ms"), "attempt": execution.attempt,
                                           "recovered": result.outcome == OUTCOME_ALREADY})
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
                                       "execution": result.outcome}))
    return events


def _retry_countdown(request: Any) -> float:
    """Exponential backoff with full jitter, as Celery's retry_backoff computes it."""
    from celery.utils.time import get_exponential_backoff_interval

    return get_exponential_backoff_interval(
        factor=1, retries=_transient_attempts(request), full_jitter=True,
        maximum=int(getattr(settings, "PROVISIONING_RETRY_BACKOFF_MAX", 600)))


def _finish(jobs: list[Job], *, leader_final: bool) -> None:
    """Record every job's outcome in one portal transaction, after the target committed: the
    request's status, its Execution row, the managed state, the audit events and the inventory.
    A companion (not the leader) that must retry gets a new outbox message with a backoff;
    the leader's retry is its task's own (autoretry)."""
    from portal.services.managed import managed_record_applied_many
    from portal.services.names import names_release
    from provisioning.outbox import enqueue_retry

    now = timezone.now()
    applied = [job for job in jobs if job.result is not None]
    for job in applied:
        if job.request.type == RequestType.REVOKE:
            # Access must really stop: sessions already open keep their privileges otherwise.
            from provisioning.sessions import end_role_sessions

            job.terminated = end_role_sessions(job.request.instance, job.result.database,
                                               job.request.payload.get("role", ""))
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
            error = job.error
            final = (leader_final if index == 0 else False) or _transient_attempts(request) + 1 > max_retries()
            retrying = isinstance(error, TransientTargetError) and not final
            detail = error.message
            if error.statement:
                detail = f"{error.message} — while running: {error.statement}"
            if retrying:
                detail = f"retrying after a transient error: {detail}"
            request.status = RequestStatus.QUEUED if retrying else RequestStatus.FAILED
            ChangeRequest.objects.filter(pk=request.pk).update(status=request.status, status_detail=detail[:4000],
                                                               updated_at=now)
            execution.outcome = OUTCOME_RETRYING if retrying else OUTCOME_FAILED
            execution.statements = job.log_rows
            execution.error = detail[:4000]
            execution.sqlstate = error.sqlstate[:5]
            events.append(audit_event(
                "request.retrying" if retrying else "request.failed", object_type="request", object_id=request.pk,
                instance=request.instance, statement=error.statement, request_id=request.pk,
                outcome=execution.outcome,
                details={"error": error.message, "sqlstate": error.sqlstate, "attempt": execution.attempt,
                         "worker": execution.worker}))
            if retrying and index > 0:
                enqueue_retry(request, countdown=_retry_countdown(request))
            if not retrying and _has_recipient(request):
                notify["failed"].append(request.pk)
        _save_executions([job.execution for job in jobs])
        managed_record_applied_many([job.request for job in applied])
        # Applied (the names now live in the managed records) or failed: the names are free again.
        names_release([job.request for job in jobs if job.request.status != RequestStatus.QUEUED])
        record_many(events)
        for event_name, ids in notify.items():
            if ids:
                _notify_on_commit(ids, event_name)
        # In the same transaction as "applied": a request submitted right after sees the change.
        stale = _patch_inventory([job.request for job in applied])
    for instance in stale:
        _refresh_inventory(instance)


# One statement for a batch's Execution rows (Django's bulk_update builds a CASE per column
# and row, slower than the plans it records). Values are parameters, the text is constant.
_SAVE_EXECUTIONS = (
    "UPDATE portal_execution AS e SET finished_at = v.finished_at, outcome = v.outcome,"
    " statements = v.statements::jsonb, error = v.error, sqlstate = v.sqlstate"
    " FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])"
    " AS v(id, finished_at, outcome, statements, error, sqlstate) WHERE e.id = v.id"
)


def _save_executions(executions: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_SAVE_EXECUTIONS, [
            [e.pk for e in executions], [e.finished_at for e in executions], [e.outcome for e in executions],
            [json.dumps(e.statements) for e in executions], [e.error for e in executions],
            [e.sqlstate for e in executions],
        ])


def _has_recipient(request: Any) -> bool:
    """Whether an applied/failed notification reaches anyone (portal.notifications sends those
    to the requester and the team's webhook): a system request of a team without a webhook
    costs no task."""
    return bool((request.requester is not None and request.requester.email) or request.team.webhook_url)


def _notify_on_commit(request_ids: list[int], event: str) -> None:
    """E-mail / webhook of the transitions, sent by their own task once the outcome is committed."""
    from portal.notifications import notify_enqueue

    transaction.on_commit(lambda: notify_enqueue(request_ids, event))


def _transient_attempts(request: Any) -> int:
    """Consecutive transient failures since the request was last queued by a person."""
    count = 0
    for outcome in request.executions.order_by("-attempt").values_list("outcome", flat=True):
        if outcome == OUTCOME_RETRYING:
            count += 1
        elif outcome in (OUTCOME_FAILED, OUTCOME_APPLIED, OUTCOME_ALREADY):
            break
    return count


def _patch_inventory(requests: list[Any]) -> list[Any]:
    """Keep the instance inventory (what submit-time checks read) in step with the changes;
    returns the instances that must be read again instead.

    Grants and revokes change no inventory entry; a new role or schema is merged into the stored
    snapshot by one UPDATE in the database (a full read of the cluster costs a connection per
    database, more than the plan itself; reading and rewriting the whole document here would
    cost the worker time in proportion to the instance's size); other changes (DDL, replicas)
    read the cluster again. The beat job re-reads every instance regularly, so an entry cannot
    stay wrong for long."""
    stale: dict[int, Any] = {}
    patches: dict[int, list[Any]] = {}
    for request in requests:
        if request.type in (RequestType.GRANT, RequestType.REVOKE):
            continue
        if request.type in (RequestType.ROLE, RequestType.SCHEMA):
            patches.setdefault(request.instance_id, []).append(request)
        else:
            stale[request.instance_id] = request.instance
    for instance_id, changes in patches.items():
        if not _merge_into_inventory(instance_id, changes):
            stale[instance_id] = changes[0].instance  # no usable snapshot yet: read the cluster
    return list(stale.values())


# snapshot || {"roles": owners || roles || new roles, "databases": ...}: a role request's entry
# replaces the stored one; a schema's owner is added only when no role of that name is known; a
# schema is added only when absent (its stored entry lists its tables). Every value is a parameter.
_MERGE_ROLES = sql.SQL(
    "UPDATE portal_instanceinventory SET snapshot = snapshot || jsonb_build_object("
    "'roles', %s::jsonb || COALESCE(snapshot->'roles', '{}'::jsonb) || %s::jsonb"
)
_MERGE_DATABASES = sql.SQL(", 'databases', COALESCE(snapshot->'databases', '{}'::jsonb)")
_MERGE_DATABASE = sql.SQL(
    " || jsonb_build_object(%s::text, COALESCE(snapshot->'databases'->%s::text, '{}'::jsonb)"
    " || jsonb_build_object('schemas', %s::jsonb"
    " || COALESCE(snapshot->'databases'->%s::text->'schemas', '{}'::jsonb)))"
)
_MERGE_WHERE = sql.SQL(") WHERE instance_id = %s AND jsonb_typeof(snapshot) = 'object' AND snapshot <> '{}'::jsonb")


def _merge_into_inventory(instance_id: int, changes: list[Any]) -> bool:
    """Merge the new roles and schemas of `changes` into the instance's stored snapshot in one
    statement (the row lock is the UPDATE's own); False when there is no snapshot to merge into."""
    roles: dict[str, dict] = {}
    owners: dict[str, dict] = {}
    schemas: dict[str, dict[str, dict]] = {}
    for request in changes:
        payload = request.payload or {}
        if request.type == RequestType.ROLE:
            roles[payload["name"]] = _role_entry(login=bool(payload.get("login")),
                                                 member_of=list(payload.get("member_of") or []),
                                                 connection_limit=payload.get("connection_limit"),
                                                 valid_until=payload.get("valid_until"))
            continue
        owner = payload.get("owner_role") or ""
        if owner:
            owners.setdefault(owner, _role_entry(login=False, member_of=[]))
        schemas.setdefault(payload["database"], {}).setdefault(payload["name"], {"owner": owner, "tables": []})
    statement = _MERGE_ROLES
    params: list[Any] = [json.dumps(owners), json.dumps(roles)]
    if schemas:
        # One fixed fragment per database (a batch is one database; the text never holds a value).
        statement += _MERGE_DATABASES + sql.Composed([_MERGE_DATABASE] * len(schemas))
        for database, entries in schemas.items():
            params += [database, database, json.dumps(entries), database]
    with connection.cursor() as cursor:
        cursor.execute(statement + _MERGE_WHERE, [*params, instance_id])
        return cursor.rowcount == 1


def _role_entry(*, login: bool, member_of: list[str], connection_limit: Any = None, valid_until: Any = None) -> dict:
    # The shape provisioning/inventory.py stores; the plan denies every other attribute.
    return {"login": login, "superuser": False, "createdb": False, "createrole": False, "replication": False,
            "bypassrls": False, "connection_limit": -1 if connection_limit is None else connection_limit,
            "valid_until": valid_until, "member_of": sorted(member_of)}


def _refresh_inventory(instance: Any) -> None:
    try:
        from provisioning.inventory import inventory_refresh
    except ImportError:
        return
    try:
        inventory_refresh(instance)
    except Exception as exc:  # noqa: BLE001 - the change is applied; a stale inventory heals on the next beat
        log.warning("apply.inventory_refresh_failed", instance=instance.pk, error=describe_error(exc))


def verify_plan(request: Any) -> list[Step]:
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


def _run_replica(execution: Any, worker: str) -> TargetResult:
    from provisioning.replicas import runner  # owned by the replicas engineer

    statements = runner.apply(execution.request, worker=worker)
    return TargetResult(outcome=OUTCOME_APPLIED, statements=statements, database="")


def _prepare(job: Job) -> None:
    """Verify the plan and, for a login role, get its password (committed in the portal
    database before the target transaction, so every retry reuses the same one)."""
    request = job.request
    job.steps = verify_plan(request)
    # The portal's side of the plan's assumptions (teams are not on the cluster): e.g. the owner
    # role a schema plan reuses still belongs to the requesting team.
    preconditions = getattr(module_for(request.type), "preconditions", None)
    problem = preconditions(request) if preconditions is not None else None
    if problem:
        raise PermanentTargetError(f"the plan's assumptions no longer hold: {problem}")
    if any(step.secret for step in job.steps):
        role = _secret_role(request)
        job.password = _password_for(request, role)


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
            live[0].result = _run_replica(live[0].execution, worker)
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


# --- entry point ------------------------------------------------------------------------------
def apply(*, request_id: int, plan_hash: str, worker: str, final_attempt: bool = False,
          companions: list[int] | None = None) -> str:
    """Apply one request and the companions its worker claims with it. Returns the leader's
    outcome; raises TransientTargetError when the task should retry (the request is then
    `queued` with the reason in status_detail)."""
    with liveness_lock(request_id) as (request, held):
        status = request.status if request is not None else None
        if status not in (RequestStatus.QUEUED, RequestStatus.RUNNING):
            # Applied, failed or cancelled (often as a companion of another worker's batch): a
            # terminal state leaves only by a person's retry, which sends a message of its own.
            log.info("apply.not_claimable", request=request_id, status=status)
            return _lead_companions(companions, worker) or "skipped"
        if not held:
            log.info("apply.busy_elsewhere", request=request_id)
            return _lead_companions(companions, worker) or "busy"
        claimed = _claim(request, plan_hash, worker, companions)
        if claimed is None:
            return _lead_companions(companions, worker) or "skipped"
        executions, companion_ids = claimed
        jobs = [Job(execution=execution) for execution in executions]
        try:
            _execute(jobs, worker=worker)
            _finish(jobs, leader_final=final_attempt)
        finally:
            _unlock(companion_ids)
        leader = jobs[0]
        log.info("apply.done", request=request_id, batch=len(jobs),
                 outcome=leader.result.outcome if leader.result else OUTCOME_FAILED,
                 failed=sum(1 for job in jobs if job.error is not None))
        if leader.result is not None:
            return leader.result.outcome
        if leader.request.status == RequestStatus.QUEUED:
            raise leader.error
        return OUTCOME_FAILED


def _lead_companions(companions: list[int] | None, worker: str) -> str | None:
    """The message's own request cannot be claimed here: the companions published with it must
    not wait for the sweeper, so the first one still queued leads them instead."""
    if not companions:
        return None
    waiting = list(ChangeRequest.objects.filter(pk__in=companions, status=RequestStatus.QUEUED)
                   .order_by("pk").values_list("pk", "plan_hash"))
    if not waiting:
        return None
    (lead, lead_hash), rest = waiting[0], [pk for pk, _ in waiting[1:]]
    # A transient error propagates: this message's task retries (with backoff) and, its own
    # request still unclaimable, leads the companions again.
    return f"led companions: {apply(request_id=lead, plan_hash=lead_hash, worker=worker, companions=rest)}"
