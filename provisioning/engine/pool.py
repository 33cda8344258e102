"""The connections a plan runs over: pooled admin connections per worker process, and the team's
executor login for requester SQL."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from portal.choices import RequestType
from provisioning import executor_logins
from provisioning.connections import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, instance_conninfo

# Ending an abandoned backend quickly matters: it may hold the instance lock (PG >= 14).
CLIENT_CHECK_INTERVAL = "2s"

# Admin connections kept per worker process: a new SCRAM connection costs more than a small plan.
# Reused only when idle and healthy; any error closes the connection instead of returning it.
_TARGET_CONNECTIONS: dict[tuple, tuple[psycopg.Connection, float]] = {}
TARGET_IDLE_MAX_SECONDS = 60.0
TARGET_PROBE_AFTER_SECONDS = 2.0


def _prepare_session(conn: psycopg.Connection) -> None:
    if conn.info.server_version >= 140000:
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL)))


def _connection_key(instance: Any, database: str) -> tuple:
    # The password's hash is part of the key: a connection of rotated credentials is never reused.
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
    """An admin connection to `database` in autocommit: a pooled one when idle and healthy, else a
    new one; returned to the pool only when the caller's block ended without an error."""
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


def plan_connection(request: Any, database: str) -> contextlib.AbstractContextManager[psycopg.Connection]:
    """Requester SQL (DDL) runs over the team's executor login, never the admin login; plans the
    portal renders itself run over the (pooled) admin connection. DDL is never batched, so a
    batch is always of one kind."""
    if request.type == RequestType.DDL:
        return _executor_login_connection(request, database)
    return target_connection(request.instance, database)
