"""Dry run of a DDL plan at submit: the plan runs on the target in a transaction that is rolled back.

Runs synchronously inside request_submit (on dev and staging instances only), over the team's
executor login (provisioning/executor_logins.py), exactly as the approved plan will run: never
as the instance's admin login, so nothing in the requester's SQL can reach beyond the team's
owner roles even before a reviewer has seen it. Bounded by a 1 s lock_timeout and a 5 s
statement_timeout, so a submit waits at most a few seconds. Nothing is committed: the
transaction always ends with ROLLBACK. Steps that cannot run in a transaction (CREATE INDEX
CONCURRENTLY) are skipped and listed in the result.

The requester learns whether it passed and, when it did not, which statement failed with its
SQLSTATE, condition name and position: never the server's message, which can quote values the
statement computed (a cast error that printed a superuser's name; a file's content).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from provisioning import connections, executor_logins
from provisioning.errors import TargetError, describe_user_sql_error
from provisioning.plans.ddl import DRY_RUN_ENVIRONMENTS, numbered_steps

DRY_RUN_LOCK_TIMEOUT_MS = 1000
DRY_RUN_STATEMENT_TIMEOUT_MS = 5000


def applies_to(instance: Any) -> bool:
    return instance.environment in DRY_RUN_ENVIRONMENTS


def run(instance: Any, team: Any, payload: dict) -> dict:
    """{ok, error, sqlstate, position, statement_index, skipped, note, ms}; never raises for SQL errors."""
    started = time.monotonic()
    steps = numbered_steps(payload)
    # The portal's own steps (index None, e.g. dropping an INVALID index first) are not the request's.
    skipped = [index for index, step in steps if not step.transactional and index is not None]
    result: dict[str, Any] = {"ok": True, "error": "", "sqlstate": "", "position": None, "statement_index": None,
                              "skipped": skipped, "note": ""}
    if skipped:
        result["note"] = ("statements " + ", ".join(str(i) for i in skipped) +
                          " run outside a transaction (CREATE / DROP INDEX CONCURRENTLY) and were not dry-run")
    try:
        with executor_logins.connect(instance, team, payload["database"], owner_role=payload["owner_role"],
                                     lock_timeout_ms=DRY_RUN_LOCK_TIMEOUT_MS,
                                     statement_timeout_ms=DRY_RUN_STATEMENT_TIMEOUT_MS) as conn:
            try:
                with conn.cursor() as cursor:
                    for index, step in steps:
                        if not step.transactional:
                            continue
                        try:
                            cursor.execute(step.statement)
                        except psycopg.Error as exc:
                            result.update(ok=False, statement_index=index, sqlstate=exc.sqlstate or "",
                                          position=int(exc.diag.statement_position or 0) or None,
                                          error=describe_user_sql_error(exc) if step.user_sql else
                                          f"the portal's own step failed ({describe_user_sql_error(exc)})")
                            break
            finally:
                conn.rollback()
    except psycopg.Error as exc:  # connecting, or setting up the executor login (the portal's own SQL)
        result.update(ok=False, error=f"dry run could not connect: {connections.describe_error(exc)}")
    except TargetError as exc:  # the executor login could not be set up for this owner role
        result.update(ok=False, error=f"dry run could not run: {exc.message}")
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result
