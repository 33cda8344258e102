"""Errors of the provisioning engine, by kind: retry later, or fail the request now."""

from __future__ import annotations

import re

import psycopg


class TargetError(Exception):
    """A plan could not be applied on the target cluster."""

    def __init__(self, message: str, *, sqlstate: str = "", statement: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        # The secret-free text of the statement that failed, when one did.
        self.statement = statement


class TransientTargetError(TargetError):
    """Worth retrying with backoff: connection lost, admin shutdown, lock timeout, serialization
    failure, deadlock, "tuple concurrently updated". Also raised by the replica runner."""


class PermanentTargetError(TargetError):
    """Retrying cannot help: syntax, permission, undefined object, stale plan, cluster changed."""


def condition_name(sqlstate: str) -> str:
    """PostgreSQL's condition name for a SQLSTATE (42703 -> undefined_column), or the code itself."""
    try:
        name = psycopg.errors.lookup(sqlstate).__name__
    except KeyError:
        return sqlstate or "error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def describe_user_sql_error(exc: BaseException) -> str:
    """What a requester may learn of their own statement's failure: the condition, the SQLSTATE and
    where in the statement it happened, never the server's text (it can quote computed values:
    a cast error that printed a superuser's name, a file's content)."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if not sqlstate:
        return "the statement failed (no SQLSTATE: the connection was lost)"
    diag = getattr(exc, "diag", None)
    position = getattr(diag, "statement_position", None) if diag is not None else None
    where = f", at character {position} of the statement" if position else ""
    return f"{condition_name(sqlstate)} (SQLSTATE {sqlstate}){where}"
