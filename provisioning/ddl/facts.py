"""Table facts for the review rules, read from the cluster at submit over a short read-only connection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from provisioning import connections
from provisioning.ddl.rules import ColumnFacts, Facts, TableFacts

FACTS_STATEMENT_TIMEOUT_MS = 3000
FACTS_LOCK_TIMEOUT_MS = 500

_TABLES = """
SELECT c.relname, c.reltuples, c.relpages
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) AND c.relkind IN ('r', 'p', 'm')
"""
_COLUMNS = """
SELECT c.relname, a.attname, t.typname, a.atttypmod
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) AND a.attnum > 0 AND NOT a.attisdropped
"""


def read_facts(conn: psycopg.Connection, *, schema: str, tables: Iterable[str]) -> Facts:
    """Facts of the named tables of `schema` that exist (others are simply absent)."""
    names = sorted(set(tables))
    if not names:
        return {}
    facts: dict[str, dict[str, Any]] = {}
    with conn.cursor() as cursor:
        cursor.execute(_TABLES, {"schema": schema, "names": names})
        for relname, reltuples, relpages in cursor.fetchall():
            facts[relname] = {"rows": float(reltuples), "pages": int(relpages), "columns": {}}
        cursor.execute(_COLUMNS, {"schema": schema, "names": list(facts)})
        for relname, attname, typname, typmod in cursor.fetchall():
            facts[relname]["columns"][attname] = ColumnFacts(type=typname, typmod=int(typmod))
        for relname, data in facts.items():
            # reltuples is an estimate: -1 before the first ANALYZE, 0 after it on an empty table.
            # Whether a row exists is then asked directly (LIMIT 1: cheap on any size).
            if data["rows"] > 0:
                data["has_rows"] = True
            else:
                cursor.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{} LIMIT 1)").format(
                    sql.Identifier(schema), sql.Identifier(relname)))
                data["has_rows"] = bool(cursor.fetchone()[0])
    return {name: TableFacts(**data) for name, data in facts.items()}


def fetch_facts(instance: Any, *, database: str, schema: str, tables: Iterable[str]) -> Facts:
    """read_facts over a fresh admin connection, read-only, with tight timeouts."""
    with connections.connect(instance, database, lock_timeout_ms=FACTS_LOCK_TIMEOUT_MS,
                             statement_timeout_ms=FACTS_STATEMENT_TIMEOUT_MS) as conn:
        conn.read_only = True
        try:
            return read_facts(conn, schema=schema, tables=tables)
        finally:
            conn.rollback()


def facts_for_review(instance: Any, wanted: Any) -> tuple[Facts | None, str | None]:
    """The facts a DDL plan's review() asks for (`wanted`: provisioning.plans.ddl.FactsWanted), or
    (None, why) when the cluster cannot be read: the review then skips the size-dependent rules
    rather than refusing the request. `why` is secret-free (describe_error never quotes a DSN)."""
    try:
        return fetch_facts(instance, database=wanted.database, schema=wanted.schema, tables=wanted.tables), None
    except Exception as exc:  # noqa: BLE001 - any failure to read facts degrades to "unknown"
        return None, connections.describe_error(exc)
