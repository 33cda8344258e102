"""Admin connections to a managed instance: timeouts, application_name, no secrets in errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from portal.logging import redact_text

APPLICATION_NAME = "dbportal"
CONNECT_TIMEOUT = 5
LOCK_TIMEOUT_MS = 5000
STATEMENT_TIMEOUT_MS = 60000


def conninfo(
    *, host: str, port: int, dbname: str, user: str, password: str = "", connect_timeout: int = CONNECT_TIMEOUT
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "host": host,
        "port": port,
        "dbname": dbname,
        "user": user,
        "connect_timeout": connect_timeout,
        "application_name": APPLICATION_NAME,
        # Never fall back to ~/.pgpass or PGPASSWORD of the worker's OS user.
        "passfile": "/dev/null",
        "sslmode": "prefer",
    }
    if password:
        params["password"] = password
    return params


def instance_conninfo(instance: Any, database: str | None = None, connect_timeout: int = CONNECT_TIMEOUT) -> dict[str, Any]:
    return conninfo(
        host=instance.host,
        port=instance.port,
        dbname=database or instance.database,
        user=instance.admin_user,
        password=instance.admin_password,
        connect_timeout=connect_timeout,
    )


@contextlib.contextmanager
def connect(
    instance: Any,
    database: str | None = None,
    *,
    autocommit: bool = False,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> Iterator[psycopg.Connection]:
    """An admin connection with the portal's session settings."""
    params = instance_conninfo(instance, database, connect_timeout)
    params["options"] = f"-c lock_timeout={int(lock_timeout_ms)} -c statement_timeout={int(statement_timeout_ms)}"
    conn = psycopg.connect(**params, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def describe_error(exc: BaseException) -> str:
    """A message about a failed connection that never repeats the password or DSN."""
    if isinstance(exc, psycopg.OperationalError):
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else "connection failed"
        if "password authentication failed" in str(exc):
            return "password authentication failed for the admin user"
        if "Connection refused" in str(exc):
            return "connection refused: nothing listens on that host and port"
        if "timeout expired" in str(exc):
            return "connection timed out"
        if "does not exist" in str(exc):
            return redact_text(text)
        return redact_text(text)
    return redact_text(str(exc))
