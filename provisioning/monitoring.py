"""Monitoring samples of one managed instance (issue #21): what its catalogs and statistics say now.

`take_sample(instance)` opens the instance's admin connection (provisioning/connections.py:
short connect and statement timeouts, application_name 'dbportal') to the maintenance database
and reads, cluster-wide, the sessions (pg_stat_activity with pg_blocking_pids for the ones
waiting on a lock), the databases (size, transaction-ID age, cache hits) and the settings; then
one short connection per managed database (admin_login.MANAGED_DATABASE) for its biggest tables
(size, live and dead tuples, last vacuum, scans), and pg_stat_statements where the extension is
installed and loaded ("not available" with the reason otherwise, never a failure).

What a least-privilege admin login sees: it holds no pg_monitor nor pg_read_all_stats, so for
sessions of roles it has no privileges of, pg_stat_activity shows the pid, role, database and
application but not the state or the times (they are NULL): such sessions count under state
"hidden" and never as long or idle in transaction; pg_locks, pg_blocking_pids, sizes and
pg_stat_database are readable by any role, so blocking and sizes are complete. A superuser admin
sees everything. The text of a session's query is never read (it may hold values); from
pg_stat_statements only the normalised statement (constants replaced by $n), cut to 300 chars.

The result is a plain dict (docs/monitoring.md lists every key); `metrics` holds the flat numbers
that charts, alerts and the Prometheus gauges read. Nothing here writes to the portal.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import psycopg
from psycopg import sql

from provisioning.admin_login import MANAGED_DATABASE
from provisioning.connections import connect, describe_error

CONNECT_TIMEOUT = 3
STATEMENT_TIMEOUT_MS = 5000
# Bounds of what one sample keeps: enough for the pages, small enough to store every minute.
MAX_SESSIONS = 200
MAX_TABLES_PER_DATABASE = 50
MAX_STATEMENTS = 10
STATEMENT_TEXT_CHARS = 300
HIDDEN = "hidden"

SETTINGS_SQL = """
SELECT current_setting('max_connections')::int, current_setting('server_version_num')::int,
       pg_is_in_recovery(), current_setting('autovacuum_vacuum_threshold')::float8,
       current_setting('autovacuum_vacuum_scale_factor')::float8
"""

# Client sessions other than this one. pg_blocking_pids only for sessions with a lock not
# granted (it takes the lock manager's locks: not worth calling for every session).
SESSIONS_SQL = """
SELECT a.pid, a.usename::text, a.datname::text, coalesce(a.application_name, ''), a.state,
       extract(epoch FROM now() - a.xact_start)::float8, extract(epoch FROM now() - a.state_change)::float8,
       a.wait_event_type,
       CASE WHEN a.pid IN (SELECT l.pid FROM pg_catalog.pg_locks l WHERE NOT l.granted)
            THEN pg_catalog.pg_blocking_pids(a.pid) END
FROM pg_catalog.pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.datid IS NOT NULL AND a.datid <> 0 AND a.usename IS NOT NULL
  AND coalesce(a.backend_type, 'client backend') = 'client backend'
ORDER BY a.xact_start NULLS LAST, a.pid
"""

DATABASES_SQL = """
SELECT d.datname::text, age(d.datfrozenxid)::bigint,
       CASE WHEN d.datallowconn AND has_database_privilege(d.oid, 'CONNECT')
            THEN pg_catalog.pg_database_size(d.oid) END,
       s.blks_hit, s.blks_read, s.xact_commit, s.xact_rollback, s.deadlocks
FROM pg_catalog.pg_database d LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
ORDER BY d.datname
"""

MANAGED_DATABASES_SQL = (sql.SQL("SELECT datname::text FROM pg_catalog.pg_database WHERE ") + MANAGED_DATABASE
                         + sql.SQL(" ORDER BY datname"))

# The biggest tables of the connected database, with their vacuum figures. The portal's own
# marker schema and the system schemas are left out.
TABLES_SQL = """
SELECT n.nspname::text, c.relname::text, pg_catalog.pg_total_relation_size(c.oid), c.reltuples::float8,
       s.n_live_tup, s.n_dead_tup, extract(epoch FROM now() - greatest(s.last_autovacuum, s.last_vacuum))::float8,
       s.seq_scan, s.idx_scan, age(c.relfrozenxid)::bigint
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbportal_meta')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY pg_catalog.pg_total_relation_size(c.oid) DESC, n.nspname, c.relname
LIMIT %s
"""

STATEMENTS_EXTENSION_SQL = """
SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

STATEMENTS_SQL = """
SELECT coalesce(r.rolname::text, s.userid::text), coalesce(d.datname::text, s.dbid::text), s.query,
       s.calls, s.total_exec_time, s.mean_exec_time, s.rows
FROM {schema}.pg_stat_statements s
LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.userid
LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
ORDER BY s.total_exec_time DESC
LIMIT %s
"""


class SampleFailed(Exception):
    """The instance could not be sampled; the message names why, never a secret."""


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def read_sessions(conn: psycopg.Connection) -> list[dict]:
    sessions = []
    for pid, role, database, application, state, xact_s, state_s, wait, blocked_by in conn.execute(SESSIONS_SQL):
        sessions.append({
            "pid": int(pid), "role": role, "database": database, "application": application[:64],
            "state": state or HIDDEN, "xact_seconds": _num(xact_s), "state_seconds": _num(state_s),
            "wait_event_type": wait, "blocked_by": sorted(int(p) for p in blocked_by or []),
        })
    return sessions


def read_tables(conn: psycopg.Connection, database: str, vacuum: tuple[float, float]) -> list[dict]:
    threshold, scale = vacuum
    tables = []
    for schema, name, size, reltuples, live, dead, vacuumed_s, seq, idx, xid_age in conn.execute(
            TABLES_SQL, [MAX_TABLES_PER_DATABASE]):
        # Autovacuum lag: dead tuples past the point where autovacuum should have run (the
        # global settings; a table's own reloptions are not read).
        due_at = threshold + scale * max(float(reltuples or 0), 0.0)
        tables.append({
            "database": database, "schema": schema, "table": name, "total_bytes": int(size or 0),
            "live_tuples": int(live or 0), "dead_tuples": int(dead or 0),
            "vacuum_overdue": bool(dead is not None and dead > due_at),
            "seconds_since_vacuum": _num(vacuumed_s), "seq_scan": seq, "idx_scan": idx,
            "xid_age": xid_age,
        })
    return tables


def read_statements(conn: psycopg.Connection) -> dict:
    """Top statements by total time, or {"available": False, "reason": ...}: never raises."""
    row = conn.execute(STATEMENTS_EXTENSION_SQL).fetchone()
    if row is None:
        return {"available": False, "reason": "pg_stat_statements is not installed in the maintenance database"}
    query = sql.SQL(STATEMENTS_SQL).format(schema=sql.Identifier(row[0]))
    try:
        rows = conn.execute(query, [MAX_STATEMENTS]).fetchall()
    except psycopg.Error as exc:
        # Installed but not in shared_preload_libraries, or no privilege on the view.
        return {"available": False, "reason": describe_error(exc)[:200]}
    return {"available": True, "top": [
        {"role": role, "database": database, "query": (text or "")[:STATEMENT_TEXT_CHARS], "calls": int(calls),
         "total_ms": round(float(total), 3), "mean_ms": round(float(mean), 3), "rows": int(rows_)}
        for role, database, text, calls, total, mean, rows_ in rows]}


def summarise(body: dict) -> dict[str, float | None]:
    """The flat numbers of a sample: what charts, alerts and gauges read."""
    sessions = body["sessions"]
    visible_xacts = [s["xact_seconds"] for s in sessions if s["xact_seconds"] is not None and s["state"] != "idle"]
    databases = body["databases"]
    hits = sum(d["blks_hit"] or 0 for d in databases)
    reads = sum(d["blks_read"] or 0 for d in databases)
    tables = body["tables"]
    total = body["connections"]["total"]
    return {
        "connections": float(total),
        "connections_percent": round(100.0 * total / body["max_connections"], 2) if body["max_connections"] else None,
        "active_sessions": float(body["connections"]["by_state"].get("active", 0)),
        "idle_in_transaction": float(body["connections"]["by_state"].get("idle in transaction", 0)
                                     + body["connections"]["by_state"].get("idle in transaction (aborted)", 0)),
        "blocked_sessions": float(sum(1 for s in sessions if s["blocked_by"])),
        "blocking_sessions": float(len({p for s in sessions for p in s["blocked_by"]})),
        "longest_transaction_seconds": round(max(visible_xacts), 3) if visible_xacts else 0.0,
        "max_xid_age": float(max((d["xid_age"] or 0 for d in databases), default=0)),
        "database_bytes": float(sum(d["size_bytes"] or 0 for d in databases)),
        "cache_hit_ratio": round(hits / (hits + reads), 6) if hits + reads else None,
        "dead_tuples": float(sum(t["dead_tuples"] for t in tables)),
        "tables_vacuum_overdue": float(sum(1 for t in tables if t["vacuum_overdue"])),
        "replication_lag_bytes": _num(body["replication"].get("lag_bytes")),
        "replication_lag_seconds": _num(body["replication"].get("lag_seconds")),
    }


def take_sample(instance: Any) -> tuple[dict, float]:
    """(body, duration in ms) of one instance now; SampleFailed when it cannot be read."""
    started = time.perf_counter()
    try:
        with connect(instance, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                     statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
            max_connections, version_num, in_recovery, vac_threshold, vac_scale = conn.execute(SETTINGS_SQL).fetchone()
            sessions = read_sessions(conn)
            databases = [
                {"name": name, "xid_age": xid_age, "size_bytes": size, "blks_hit": hit, "blks_read": read,
                 "xact_commit": commit, "xact_rollback": rollback, "deadlocks": deadlocks}
                for name, xid_age, size, hit, read, commit, rollback, deadlocks in conn.execute(DATABASES_SQL)]
            managed = [row[0] for row in conn.execute(MANAGED_DATABASES_SQL)]
            standbys = None if in_recovery else conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_stat_replication").fetchone()[0]
            statements = read_statements(conn)
            tables = read_tables(conn, instance.database, (vac_threshold, vac_scale)) \
                if instance.database in managed else []
        for database in managed:
            if database == instance.database:
                continue
            with connect(instance, database, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                         statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
                tables.extend(read_tables(conn, database, (vac_threshold, vac_scale)))
    except psycopg.Error as exc:
        raise SampleFailed(f"{instance.name}: {describe_error(exc)}") from exc
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    tables.sort(key=lambda t: -t["total_bytes"])
    visible = [s for s in sessions if s["state"] != HIDDEN]
    body: dict[str, Any] = {
        "server_version_num": version_num,
        "max_connections": max_connections,
        "connections": {
            "total": len(sessions),
            "by_state": dict(Counter(s["state"] for s in sessions)),
            "by_role": dict(Counter(s["role"] for s in sessions)),
            "by_application": dict(Counter(s["application"] or "(none)" for s in sessions)),
        },
        "sessions": sessions[:MAX_SESSIONS],
        "sessions_hidden": len(sessions) - len(visible),
        "databases": databases,
        "tables": tables,
        "replication": {
            "is_replica": bool(instance.replica_of_id is not None or in_recovery),
            "standbys": standbys,
            # The replica health job measures lag every 15 s (portal/services/replicas.py);
            # the sample keeps its latest figure so it has a history.
            "lag_bytes": instance.replica_lag_bytes if instance.replica_of_id else None,
            "lag_seconds": instance.replica_lag_seconds if instance.replica_of_id else None,
        },
        "statements": statements,
    }
    body["metrics"] = summarise(body)
    return body, duration_ms
