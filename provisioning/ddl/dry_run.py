"""Dry run of a DDL plan at submit: the plan runs on the target in a transaction that is rolled back.

Runs synchronously inside request_submit (on dev and staging instances only): it is bounded by
a 1 s lock_timeout and a 5 s statement_timeout, so a submit waits at most a few seconds, and the
requester sees errors (missing column, type mismatch, permission) in the answer to the submit
itself instead of after a queue round trip. Nothing is committed: the transaction always ends
with ROLLBACK. Steps that cannot run in a transaction (CREATE INDEX CONCURRENTLY) are skipped
and listed in the result.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from portal.choices import Environment
from provisioning import connections

DRY_RUN_ENVIRONMENTS = {Environment.DEV, Environment.STAGING}
DRY_RUN_LOCK_TIMEOUT_MS = 1000
DRY_RUN_STATEMENT_TIMEOUT_MS = 5000


def applies_to(instance: Any) -> bool:
    return instance.environment in DRY_RUN_ENVIRONMENTS


def run(instance: Any, payload: dict) -> dict:
    """{ok, error, sqlstate, statement_index, skipped, note, ms}; never raises for SQL errors."""
    from provisioning.plans.ddl import numbered_steps

    started = time.monotonic()
    steps = numbered_steps(payload)
    # The portal's own steps (index None, e.g. dropping an INVALID index first) are not the request's.
    skipped = [index for index, step in steps if not step.transactional and index is not None]
    result: dict[str, Any] = {"ok": True, "error": "", "sqlstate": "", "statement_index": None,
                              "skipped": skipped, "note": ""}
    if skipped:
        result["note"] = ("statements " + ", ".join(str(i) for i in skipped) +
                          " run outside a transaction (CREATE / DROP INDEX CONCURRENTLY) and were not dry-run")
    try:
        with connections.connect(instance, payload["database"], lock_timeout_ms=DRY_RUN_LOCK_TIMEOUT_MS,
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
                                          error=_message(exc))
                            break
            finally:
                conn.rollback()
    except psycopg.OperationalError as exc:
        result.update(ok=False, error=f"dry run could not connect: {connections.describe_error(exc)}")
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip().splitlines()[0]
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.message_hint:
        text += f" Hint: {diag.message_hint}"
    return text
