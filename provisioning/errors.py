"""Errors of the provisioning engine, by kind: retry later, or fail the request now; and the
classification of a driver error into one of those kinds."""

from __future__ import annotations

import re

import psycopg

from portal.logging import redact_text
from provisioning.connections import describe_error

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
# XX000 (internal_error) is transient only with these texts: concurrent catalog updates.
TRANSIENT_MESSAGES = ("tuple concurrently updated",)


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


def classify(exc: BaseException, statement: str = "", *, user_sql: bool = False) -> TargetError:
    """Sort a psycopg error into transient or permanent, with a message fit for the UI.

    `user_sql`: the statement is a requester's; the message then names only the condition and
    position (describe_user_sql_error), never the server's text."""
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
