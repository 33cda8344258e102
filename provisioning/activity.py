"""Who is connected: samples of pg_stat_activity, kept as the last time each role was seen.

A beat job (`provisioning.sample_activity`) fans out one task per instance
(`provisioning.sample_instance_activity`), so an instance that is down or slow costs its own
task a connect timeout and never delays the others. Each task opens one connection with the
instance's admin login (provisioning/connections.py: short timeouts, application_name
'dbportal') and reads pg_stat_activity cluster-wide: the role name, database and backend type
of every session are visible to any role (the rest, NULL for another role's sessions, is
not needed), so the least-privilege admin login
(provisioning/admin_login.py) needs nothing more than it already holds (no pg_monitor, no
pg_read_all_stats: the query text, which those would reveal, is never read).

Each role with at least one client session is upserted into RoleLastSeen with the sample's
time; `last_seen_at` only ever moves forward (a late task cannot set an older time). Nothing
here is an audit event: the samples are evidence shown to certifiers (issue #18), not changes.
"""

from __future__ import annotations

import functools
from datetime import datetime

import psycopg
import structlog
from django.db import connection as portal_connection
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from portal.errors import TargetUnavailable
from portal.models import Instance
from provisioning.connections import connect, describe_error
from provisioning.models import RoleLastSeen

log = structlog.get_logger(__name__)

SAMPLE_CONNECT_TIMEOUT = 3
SAMPLE_STATEMENT_TIMEOUT_MS = 5000

# Sessions connected to a database as a role, never the sampling session itself. Without
# pg_read_all_stats, a session of a role the admin has no privileges of shows only its pid,
# database, role and application_name (backend_type and the rest are NULL): so a NULL
# backend_type counts as a client, and the background processes are left out by having no role
# or no database (autovacuum launcher, walsenders, the logical replication launcher). The
# database is the alphabetically first of the role's sessions: stable between samples.
ACTIVITY_SQL = """
SELECT a.usename::text, min(a.datname::text), count(*)
FROM pg_catalog.pg_stat_activity a
WHERE a.usesysid IS NOT NULL AND a.usename IS NOT NULL AND a.datid IS NOT NULL AND a.datid <> 0
  AND coalesce(a.backend_type, 'client backend') = 'client backend'
  AND a.pid <> pg_backend_pid()
GROUP BY a.usename
ORDER BY a.usename
"""


def read_activity(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(role, database, sessions) of every role with a client session on the connected cluster."""
    with conn.cursor() as cursor:
        cursor.execute(ACTIVITY_SQL)
        return [(str(role), str(database or ""), int(count)) for role, database, count in cursor]


@functools.cache
def _upsert_statement() -> str:
    """One INSERT … ON CONFLICT for a whole sample; GREATEST keeps the newest time when a late
    sample arrives after a newer one. Table and column names from the model's _meta."""
    meta = RoleLastSeen._meta
    column = {name: sql.Identifier(meta.get_field(name).column)
              for name in ("instance", "role", "last_seen_at", "database", "sessions")}
    return sql.SQL(
        "INSERT INTO {table} ({instance}, {role}, {last_seen_at}, {database}, {sessions})"
        " SELECT %s, r, %s, d, s FROM unnest(%s::text[], %s::text[], %s::int[]) AS v(r, d, s)"
        " ON CONFLICT ({instance}, {role}) DO UPDATE SET"
        " {last_seen_at} = GREATEST({table}.{last_seen_at}, EXCLUDED.{last_seen_at}),"
        " {database} = CASE WHEN EXCLUDED.{last_seen_at} >= {table}.{last_seen_at}"
        " THEN EXCLUDED.{database} ELSE {table}.{database} END,"
        " {sessions} = CASE WHEN EXCLUDED.{last_seen_at} >= {table}.{last_seen_at}"
        " THEN EXCLUDED.{sessions} ELSE {table}.{sessions} END"
    ).format(table=sql.Identifier(meta.db_table), **column).as_string(None)


def record_seen(instance: Instance, rows: list[tuple[str, str, int]], *, at: datetime) -> int:
    """Upsert the roles of one sample (one statement). Returns how many roles it saw."""
    if not rows:
        return 0
    with transaction.atomic(), portal_connection.cursor() as cursor:
        cursor.execute(_upsert_statement(), [instance.pk, at, [r[0] for r in rows], [r[1] for r in rows],
                                             [r[2] for r in rows]])
    return len(rows)


def sample_instance(instance: Instance) -> int:
    """Sample one instance's sessions and record them. Raises TargetUnavailable when it cannot
    be reached (the caller, a task, logs it: a missed sample changes nothing recorded)."""
    try:
        with connect(instance, autocommit=True, connect_timeout=SAMPLE_CONNECT_TIMEOUT,
                     statement_timeout_ms=SAMPLE_STATEMENT_TIMEOUT_MS) as conn:
            rows = read_activity(conn)
    except psycopg.Error as exc:
        raise TargetUnavailable(f"{instance.name}: {describe_error(exc)}") from exc
    # The portal's clock, like every other time it keeps; taken after the read (the sessions
    # were there at most a statement ago).
    return record_seen(instance, rows, at=timezone.now())


def sampled_instances() -> list[int]:
    """Ids of the instances to sample: every one with a server (replicas too: a session on a
    read replica is access as much as one on its primary), not retired nor being built."""
    return list(Instance.objects.exclude(status__in=["retired", "provisioning"]).order_by("pk")
                .values_list("pk", flat=True))
