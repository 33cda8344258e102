"""Ending a role's live sessions on a database, so a revoke or an expiry really stops access:
PostgreSQL checks most privileges per statement, but an open session that already holds
locks, cursors or a prepared plan keeps working until it is ended."""

from __future__ import annotations

from typing import Any

import psycopg
import structlog

from provisioning.connections import connect, describe_error

log = structlog.get_logger(__name__)

# The role itself and every role that inherits from it; never a superuser's session, never ours.
SESSIONS_OF_ROLE = """
SELECT a.pid, a.usename::text, pg_terminate_backend(a.pid) AS terminated
FROM pg_stat_activity a
JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.datname = %(database)s
  AND a.pid <> pg_backend_pid()
  AND NOT r.rolsuper
  AND (a.usename = %(role)s
       OR (EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = %(role)s)
           AND pg_has_role(a.usesysid, (SELECT oid FROM pg_roles g WHERE g.rolname = %(role)s), 'MEMBER')))
"""


# Every session of a login role, in any database (offboarding: the role can no longer sign in).
SESSIONS_OF_LOGIN = """
SELECT a.pid, a.usename::text, pg_terminate_backend(a.pid) AS terminated
FROM pg_stat_activity a
JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.pid <> pg_backend_pid() AND NOT r.rolsuper AND a.usename = %(role)s
"""


def end_login_sessions(instance: Any, role: str) -> list[dict]:
    """pg_terminate_backend every session of login `role` in every database of the instance
    (through the maintenance database). Same answer and failure handling as end_role_sessions."""
    if not role:
        return []
    try:
        with connect(instance, None, autocommit=True) as conn:
            rows = conn.execute(SESSIONS_OF_LOGIN, {"role": role}).fetchall()
    except psycopg.Error as exc:
        log.warning("sessions.terminate_failed", instance=instance.pk, role=role, error=describe_error(exc))
        return [{"pid": None, "role": role, "terminated": False, "error": describe_error(exc)}]
    return [{"pid": pid, "role": name, "terminated": bool(done)} for pid, name, done in rows]


def end_role_sessions(instance: Any, database: str, role: str) -> list[dict]:
    """pg_terminate_backend every session of `role` (and its members) on `database`.
    Returns [{"pid", "role", "terminated"}]; a failure to connect is logged, not raised: the
    privileges are already gone and the caller records what happened."""
    if not role or not database:
        return []
    try:
        with connect(instance, database, autocommit=True) as conn:
            rows = conn.execute(SESSIONS_OF_ROLE, {"database": database, "role": role}).fetchall()
    except psycopg.Error as exc:
        log.warning("sessions.terminate_failed", instance=instance.pk, database=database, error=describe_error(exc))
        return [{"pid": None, "role": role, "terminated": False, "error": describe_error(exc)}]
    return [{"pid": pid, "role": name, "terminated": bool(done)} for pid, name, done in rows]
