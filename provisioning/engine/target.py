"""The one transaction on the target: instance lock, applied-change markers, the plans' steps
(assertions, statements, steps outside the transaction), and each job's result or error."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.conf import settings
from psycopg import sql

from provisioning.batching import database_of
from provisioning.engine.jobs import Job, Outcome, TargetResult
from provisioning.engine.pool import plan_connection
from provisioning.errors import PermanentTargetError, TargetError, classify
from provisioning.markers import INSTANCE_LOCK_NS, MARKER_DDL, portal_id
from provisioning.plans import Step, module_for, plan_text
from provisioning.secrets import scram_verifier, secret_role


@dataclass
class SplitPlan:
    before: list[int] = field(default_factory=list)  # indexes of non-transactional leading steps
    inside: list[int] = field(default_factory=list)  # indexes run in the one transaction
    after: list[int] = field(default_factory=list)  # every other non-transactional step


def split_plan(steps: list[Step]) -> SplitPlan:
    """Where each step runs: non-transactional steps leading the plan before its transaction, the
    transactional ones inside it, every other non-transactional step after it."""
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


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _run_step(conn: psycopg.Connection, statement: sql.Composable, shown: str, log_rows: list[dict], *,
              user_sql: bool = False) -> None:
    started = time.perf_counter()
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        error = classify(exc, shown, user_sql=user_sql)
        log_rows.append({"sql": shown, "ms": _elapsed_ms(started), "error": error.message})
        raise error from exc
    log_rows.append({"sql": shown, "ms": _elapsed_ms(started), "error": ""})


def _check_assertion(conn: psycopg.Connection, step: Step, shown: str, log_rows: list[dict]) -> None:
    """An assertion step (Step.asserts): its query must answer true inside the plan's transaction,
    else the cluster changed since the review and the plan stops, permanently, naming what changed."""
    started = time.perf_counter()
    try:
        holds = conn.execute(step.statement).fetchone()[0] is True
    except psycopg.Error as exc:
        error = classify(exc, shown)
        log_rows.append({"sql": shown, "ms": _elapsed_ms(started), "error": error.message})
        raise error from exc
    error_text = "" if holds else (f"the cluster changed since the plan was approved: it is no longer true that "
                                   f"{step.asserts}; nothing of this plan was applied")
    log_rows.append({"sql": shown, "ms": _elapsed_ms(started), "error": error_text})
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
        secret_role(request)  # a secret step belongs to a role request only
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


def _fail_pending(jobs: list[Job], error: TargetError) -> None:
    for job in jobs:
        if job.pending:
            job.error = error


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
        with plan_connection(first, database) as conn:
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
        _fail_pending(jobs, exc)
        return
    except psycopg.Error as exc:
        # Connection failures, and COMMIT itself (an unknown outcome: the marker settles it).
        _fail_pending(jobs, classify(exc))
        return
    for job in jobs:
        if job.pending:
            outcome = Outcome.ALREADY_APPLIED if job.request.pk in already else Outcome.APPLIED
            job.result = TargetResult(outcome=outcome, statements=job.log_rows, database=database)
