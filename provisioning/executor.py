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
from django.db.models import Max
from django.utils import timezone
from psycopg import sql

from audit.services import record
from portal.choices import Decision, RequestStatus, RequestType
from portal.crypto import decrypt, encrypt
from portal.logging import redact_text
from portal.models import ChangeRequest, Execution
from provisioning.connections import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, describe_error, instance_conninfo
from provisioning.errors import PermanentTargetError, TargetError, TransientTargetError
from provisioning.models import OutboxMessage, RequestSecret
from provisioning.plans import Step, module_for, plan_hash, plan_text

log = structlog.get_logger(__name__)

# Advisory lock namespaces (the two-int form: namespace, key).
LIVENESS_LOCK_NS = 0x0DB1  # portal database, key = request id: "a live worker runs this"
INSTANCE_LOCK_NS = 0x0DB2  # target database, key = instance id: catalog changes one at a time

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


# --- the portal identity written into markers ---------------------------------------------------
def portal_id() -> str:
    """Who wrote a marker: several portals (or test runs) may manage the same cluster, and their
    request ids overlap, so the marker key includes a stable id of this portal's database."""
    configured = getattr(settings, "PORTAL_ID", "")
    if configured:
        return configured
    db = connection.settings_dict
    options = db.get("OPTIONS") or {}
    seed = "|".join(str(v or "") for v in (db.get("NAME"), db.get("HOST") or options.get("host"),
                                           db.get("PORT") or options.get("port")))
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


# --- liveness lock on the portal database -------------------------------------------------------
def _lock_key(request_id: int) -> int:
    return int(request_id) % 2_147_483_647


@contextlib.contextmanager
def liveness_lock(request_id: int) -> Iterator[bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LIVENESS_LOCK_NS, _lock_key(request_id)])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
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


def classify(exc: BaseException, statement: str = "") -> TargetError:
    """Sort a psycopg error into transient or permanent, with a message fit for the UI."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    primary = (getattr(diag, "message_primary", None) or "").strip() if diag is not None else ""
    message = redact_text(primary or describe_error(exc) or type(exc).__name__)
    if sqlstate:
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


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """Hash on the client (libpq PQencryptPasswordConn) so no plain text reaches the server."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def _secret_role(request: Any) -> str:
    role = (request.payload or {}).get("name")
    if request.type != RequestType.ROLE or not role:
        raise PermanentTargetError("the plan has a secret step but the request creates no role")
    return str(role)


# --- the target transaction -------------------------------------------------------------------
MARKER_DDL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS dbportal_meta"),
    sql.SQL("REVOKE ALL ON SCHEMA dbportal_meta FROM PUBLIC"),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS dbportal_meta.applied_change ("
        " portal text NOT NULL,"
        " request_id bigint NOT NULL,"
        " plan_hash text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(),"
        " worker text NOT NULL DEFAULT '',"
        " PRIMARY KEY (portal, request_id, plan_hash))"
    ),
]


@dataclass
class TargetResult:
    outcome: str  # applied | already_applied
    statements: list[dict]
    database: str


def _run_step(conn: psycopg.Connection, statement: sql.Composable, shown: str, log_rows: list[dict]) -> None:
    started = time.perf_counter()
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        error = classify(exc, shown)
        log_rows.append({"sql": shown, "ms": round((time.perf_counter() - started) * 1000, 2), "error": error.message})
        raise error from exc
    log_rows.append({"sql": shown, "ms": round((time.perf_counter() - started) * 1000, 2), "error": ""})


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
        _run_step(conn, step.statement, shown, log_rows)
        return
    timeout_ms = int(settings.PROVISIONING_INDEX_STATEMENT_TIMEOUT_MS)
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
    try:
        _run_step(conn, step.statement, shown, log_rows)
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
        usable = (not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                  and time.monotonic() - last_used < TARGET_IDLE_MAX_SECONDS)
        if usable:
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


def marker_exists(conn: psycopg.Connection, request_id: int, hash_: str) -> bool:
    if conn.execute("SELECT to_regclass('dbportal_meta.applied_change')").fetchone()[0] is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM dbportal_meta.applied_change WHERE portal = %s AND request_id = %s AND plan_hash = %s",
        (portal_id(), request_id, hash_),
    ).fetchone()
    return row is not None


def apply_on_target(request: Any, steps: list[Step], *, worker: str, log_rows: list[dict]) -> TargetResult:
    """Run the plan on the target; the caller has claimed the request and verified the plan."""
    module = module_for(request.type)
    database = module.database(request.payload) or request.instance.database
    shown = plan_text(steps)
    split = split_plan(steps)
    needs_secret = any(step.secret for step in steps)
    instance = request.instance
    try:
        with target_connection(instance, database) as conn:
            for index in split.before:
                _run_autocommit_step(conn, steps[index], shown[index], log_rows)
            already = False
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (INSTANCE_LOCK_NS, int(instance.pk)))
                if conn.execute("SELECT to_regclass('dbportal_meta.applied_change')").fetchone()[0] is None:
                    for ddl in MARKER_DDL:
                        conn.execute(ddl)
                if marker_exists(conn, request.pk, request.plan_hash):
                    already = True
                else:
                    run_steps = steps
                    if needs_secret:
                        role = _secret_role(request)
                        verifier = scram_verifier(conn, role, _password_for(request, role))
                        run_steps = module.render(request.payload, secrets={"password": verifier})
                        if len(run_steps) != len(steps):
                            raise PermanentTargetError("the plan rendered with its secret has a different shape")
                    for index in split.inside:
                        _run_step(conn, run_steps[index].statement, shown[index], log_rows)
                    conn.execute(
                        "INSERT INTO dbportal_meta.applied_change (portal, request_id, plan_hash, worker)"
                        " VALUES (%s, %s, %s, %s)",
                        (portal_id(), request.pk, request.plan_hash, worker[:200]),
                    )
            # Idempotent by contract, so they run again after a recovered commit too.
            for index in split.after:
                _run_autocommit_step(conn, steps[index], shown[index], log_rows)
    except TargetError:
        raise
    except psycopg.Error as exc:
        # Connection failures, and COMMIT itself (an unknown outcome: the marker settles it).
        raise classify(exc) from exc
    return TargetResult(outcome=OUTCOME_ALREADY if already else OUTCOME_APPLIED, statements=log_rows, database=database)


# --- claim and record in the portal database -------------------------------------------------
def _claim(request_id: int, hash_: str, worker: str):
    with transaction.atomic():
        request = ChangeRequest.objects.select_for_update(of=("self",)).select_related("instance").filter(pk=request_id).first()
        if request is None:
            log.warning("apply.unknown_request", request=request_id)
            return None
        if request.status not in (RequestStatus.QUEUED, RequestStatus.RUNNING):
            log.info("apply.not_claimable", request=request_id, status=request.status)
            return None
        if request.plan_hash != hash_:
            # A message for another version of the plan; the current one has its own message.
            log.warning("apply.plan_hash_mismatch", request=request_id)
            return None
        now = timezone.now()
        if request.status == RequestStatus.RUNNING:
            # We hold the liveness lock, so the worker that set "running" is gone.
            lost = Execution.objects.filter(request=request, finished_at__isnull=True).update(
                finished_at=now, outcome=OUTCOME_LOST,
                error="the worker running this attempt stopped (killed or lost); another worker took over",
            )
            record("request.recovered", object_type="request", object_id=request.pk, instance=request.instance,
                   request_id=request.pk, outcome="recovered", details={"worker": worker, "lost_attempts": lost})
        attempt = (Execution.objects.filter(request=request).aggregate(n=Max("attempt"))["n"] or 0) + 1
        ChangeRequest.objects.filter(pk=request.pk).update(status=RequestStatus.RUNNING, status_detail="", updated_at=now)
        request.status = RequestStatus.RUNNING
        execution = Execution.objects.create(request=request, attempt=attempt, worker=worker[:200], plan_hash=hash_)
        OutboxMessage.objects.filter(request=request, taken_at__isnull=True).update(taken_at=now)
        record("request.running", object_type="request", object_id=request.pk, instance=request.instance,
               request_id=request.pk, outcome="running", details={"worker": worker, "attempt": attempt})
    execution.request = request
    return execution


def _approvers(request: Any) -> list[str]:
    return list(
        request.approvals.filter(decision=Decision.APPROVE, plan_hash=request.plan_hash)
        .order_by("created_at")
        .values_list("reviewer__username", flat=True)
    )


def _finish_applied(execution: Any, result: TargetResult) -> None:
    from portal.services.managed import managed_record_applied

    request = execution.request
    now = timezone.now()
    approvers = _approvers(request)
    terminated: list[dict] = []
    if request.type == RequestType.REVOKE:
        # Access must really stop: sessions already open keep their privileges otherwise.
        from provisioning.sessions import end_role_sessions

        terminated = end_role_sessions(request.instance, result.database, request.payload.get("role", ""))
    statements = result.statements
    with transaction.atomic():
        ChangeRequest.objects.filter(pk=request.pk).update(
            status=RequestStatus.APPLIED, status_detail="", applied_at=now, updated_at=now
        )
        request.status = RequestStatus.APPLIED
        execution.finished_at = now
        execution.outcome = result.outcome
        execution.statements = statements
        execution.save(update_fields=["finished_at", "outcome", "statements"])
        managed_record_applied(request)
        # Audit appends serialise on the chain's head row until commit: write them last, so
        # workers finishing at the same time wait on each other as briefly as possible.
        if result.outcome == OUTCOME_ALREADY:
            # An earlier attempt committed on the target but died before telling the portal:
            # its statements are recorded now, from the plan that was approved.
            statements = [{"sql": text, "ms": None, "error": ""} for text in request.plan]
        for position, row in enumerate(statements, start=1):
            if row.get("error"):
                continue
            record("sql.executed", object_type="request", object_id=request.pk, instance=request.instance,
                   database=result.database, statement=row["sql"], request_id=request.pk, approvers=approvers,
                   outcome="ok", details={"position": position, "ms": row.get("ms"), "attempt": execution.attempt,
                                          "recovered": result.outcome == OUTCOME_ALREADY})
        for session in terminated:
            record("session.terminated", object_type="role", object_id=request.payload.get("role", ""),
                   instance=request.instance, database=result.database, request_id=request.pk,
                   outcome="terminated" if session["terminated"] else "not_terminated", details=session)
        record("request.applied", object_type="request", object_id=request.pk, instance=request.instance,
               database=result.database, request_id=request.pk, approvers=approvers, outcome="applied",
               details={"attempt": execution.attempt, "worker": execution.worker, "execution": result.outcome})
        _notify_on_commit(request.pk, "applied")
        # In the same transaction as "applied": a request submitted right after sees the change.
        patched = _patch_inventory(request)
    if not patched:
        _refresh_inventory(request.instance)


def _finish_failed(execution: Any, error: TargetError, statements: list[dict], *, retrying: bool) -> None:
    request = execution.request
    now = timezone.now()
    detail = error.message
    if error.statement:
        detail = f"{error.message} — while running: {error.statement}"
    status = RequestStatus.QUEUED if retrying else RequestStatus.FAILED
    if retrying:
        detail = f"retrying after a transient error: {detail}"
    with transaction.atomic():
        ChangeRequest.objects.filter(pk=request.pk).update(status=status, status_detail=detail[:4000], updated_at=now)
        request.status = status
        execution.finished_at = now
        execution.outcome = OUTCOME_RETRYING if retrying else OUTCOME_FAILED
        execution.statements = statements
        execution.error = detail[:4000]
        execution.sqlstate = error.sqlstate[:5]
        execution.save(update_fields=["finished_at", "outcome", "statements", "error", "sqlstate"])
        record("request.retrying" if retrying else "request.failed", object_type="request", object_id=request.pk,
               instance=request.instance, statement=error.statement, request_id=request.pk,
               outcome=execution.outcome,
               details={"error": error.message, "sqlstate": error.sqlstate, "attempt": execution.attempt,
                        "worker": execution.worker})
        if not retrying:
            _notify_on_commit(request.pk, "failed")


def _notify_on_commit(request_id: int, event: str) -> None:
    """E-mail / webhook of the transition, sent by its own task once the outcome is committed."""
    from portal.notifications import notify_enqueue

    transaction.on_commit(lambda: notify_enqueue(request_id, event))


def _transient_attempts(request: Any) -> int:
    """Consecutive transient failures since the request was last queued by a person."""
    count = 0
    for outcome in request.executions.order_by("-attempt").values_list("outcome", flat=True):
        if outcome == OUTCOME_RETRYING:
            count += 1
        elif outcome in (OUTCOME_FAILED, OUTCOME_APPLIED, OUTCOME_ALREADY):
            break
    return count


def _patch_inventory(request: Any) -> bool:
    """Keep the instance inventory (what submit-time checks read) in step with the change;
    False when the cluster must be read again instead.

    Grants and revokes change no inventory entry; a new role or schema is added to the stored
    snapshot under a row lock (a full read costs a connection per database, more than the plan
    itself); other changes (DDL, replicas) read the cluster again. The beat job re-reads every
    instance regularly, so an entry cannot stay wrong for long."""
    from portal.models import InstanceInventory

    if request.type in (RequestType.GRANT, RequestType.REVOKE):
        return True
    if request.type not in (RequestType.ROLE, RequestType.SCHEMA):
        return False
    payload = request.payload or {}
    inventory = InstanceInventory.objects.select_for_update().filter(instance=request.instance).first()
    if inventory is None or not inventory.snapshot:
        return False
    snapshot = inventory.snapshot
    roles = snapshot.setdefault("roles", {})
    if request.type == RequestType.ROLE:
        roles[payload["name"]] = _role_entry(login=bool(payload.get("login")),
                                             member_of=list(payload.get("member_of") or []),
                                             connection_limit=payload.get("connection_limit"),
                                             valid_until=payload.get("valid_until"))
    else:
        owner = payload.get("owner_role") or ""
        if owner and owner not in roles:
            roles[owner] = _role_entry(login=False, member_of=[])
        schemas = snapshot.setdefault("databases", {}).setdefault(payload["database"], {}).setdefault("schemas", {})
        schemas.setdefault(payload["name"], {"owner": owner, "tables": []})
    inventory.snapshot = snapshot
    inventory.save(update_fields=["snapshot"])
    return True


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


# --- entry point ------------------------------------------------------------------------------
def apply(*, request_id: int, plan_hash: str, worker: str, final_attempt: bool = False) -> str:
    """Apply one request. Returns the outcome; raises TransientTargetError when the task should
    retry (the request is then `queued` with the reason in status_detail)."""
    with liveness_lock(request_id) as held:
        if not held:
            log.info("apply.busy_elsewhere", request=request_id)
            return "busy"
        execution = _claim(request_id, plan_hash, worker)
        if execution is None:
            return "skipped"
        request = execution.request
        log_rows: list[dict] = []
        try:
            steps = verify_plan(request)
            if request.type == RequestType.REPLICA:
                result = _run_replica(execution, worker)
            else:
                result = apply_on_target(request, steps, worker=worker, log_rows=log_rows)
        except TransientTargetError as exc:
            last = final_attempt or _transient_attempts(request) + 1 > max_retries()
            _finish_failed(execution, exc, log_rows, retrying=not last)
            log.warning("apply.transient_error", request=request_id, sqlstate=exc.sqlstate, final=last)
            if last:
                return OUTCOME_FAILED
            raise
        except PermanentTargetError as exc:
            _finish_failed(execution, exc, log_rows, retrying=False)
            log.warning("apply.failed", request=request_id, sqlstate=exc.sqlstate)
            return OUTCOME_FAILED
        except Exception as exc:
            # A bug or an unexpected library error: fail visibly rather than leave it running.
            _finish_failed(execution, PermanentTargetError(f"internal error: {type(exc).__name__}: "
                                                           f"{redact_text(str(exc))}"), log_rows, retrying=False)
            log.exception("apply.crashed", request=request_id)
            return OUTCOME_FAILED
        _finish_applied(execution, result)
        log.info("apply.done", request=request_id, outcome=result.outcome)
        return result.outcome
