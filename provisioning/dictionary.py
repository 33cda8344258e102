"""The data dictionary of one managed database, read from its catalog (issue #21).

`read_dictionary(instance, database)` opens the instance's admin connection to the database
(provisioning/connections.py) and reads, in five catalog queries whatever the number of tables:
schemas (owner, comment), relations (tables, partitioned tables, views, materialised views,
foreign tables: owner, comment, row estimate, size, scan counts), columns (type, nullability,
default, comment), constraints (definition, referenced table) and indexes (definition, size,
scans). System schemas and the portal's own `dbportal_meta` are left out. Catalogs are readable by
any role, so the least-privilege admin login sees every object (sizes too); only the statistics
views show scan counts just for tables the admin may read (else NULL).

`structure(body)` is the part that describes the schema (no sizes, estimates or counters): two
snapshots with the same structure digest describe the same database. `diff(old, new)` lists what
changed between two structures. Nothing here writes to the portal.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
from psycopg import sql

from provisioning.admin_login import MANAGED_DATABASE
from provisioning.connections import connect, describe_error

CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT_MS = 30000

# Static text composed with psycopg.sql (the queries run without parameters, so % is plain).
_SCHEMA_FILTER = sql.SQL("""n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbportal_meta')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'""")

SCHEMAS_SQL = sql.SQL("""
SELECT n.nspname::text, pg_catalog.pg_get_userbyid(n.nspowner)::text, ds.description
FROM pg_catalog.pg_namespace n
LEFT JOIN pg_catalog.pg_description ds
       ON ds.objoid = n.oid AND ds.classoid = 'pg_catalog.pg_namespace'::regclass AND ds.objsubid = 0
WHERE {schema_filter}
ORDER BY 1
""").format(schema_filter=_SCHEMA_FILTER)

RELATIONS_SQL = sql.SQL("""
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, pg_catalog.pg_get_userbyid(c.relowner)::text,
       ds.description, c.reltuples::float8,
       CASE WHEN c.relkind IN ('r', 'p', 'm') THEN pg_catalog.pg_total_relation_size(c.oid) END,
       s.seq_scan, s.seq_tup_read, s.idx_scan
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_description ds
       ON ds.objoid = c.oid AND ds.classoid = 'pg_catalog.pg_class'::regclass AND ds.objsubid = 0
LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition AND {schema_filter}
ORDER BY 2, 3
""").format(schema_filter=_SCHEMA_FILTER)

COLUMNS_SQL = sql.SQL("""
SELECT a.attrelid, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), ds.description
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_catalog.pg_description ds
       ON ds.objoid = a.attrelid AND ds.classoid = 'pg_catalog.pg_class'::regclass AND ds.objsubid = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND {schema_filter}
ORDER BY a.attrelid, a.attnum
""").format(schema_filter=_SCHEMA_FILTER)

CONSTRAINTS_SQL = sql.SQL("""
SELECT k.conrelid, k.conname::text, k.contype::text, pg_catalog.pg_get_constraintdef(k.oid),
       CASE WHEN k.contype = 'f' THEN fn.nspname::text || '.' || fc.relname::text END
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = k.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
WHERE k.conrelid <> 0 AND NOT c.relispartition AND {schema_filter}
ORDER BY k.conrelid, k.conname
""").format(schema_filter=_SCHEMA_FILTER)

INDEXES_SQL = sql.SQL("""
SELECT i.indrelid, ic.relname::text, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary,
       pg_catalog.pg_relation_size(i.indexrelid), s.idx_scan
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE NOT c.relispartition AND {schema_filter}
ORDER BY i.indrelid, ic.relname
""").format(schema_filter=_SCHEMA_FILTER)

KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
CONSTRAINT_TYPES = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion",
                    "t": "trigger", "n": "not null"}
# Figures of a table or index, not part of its structure.
FIGURES = ("rows_estimate", "total_bytes", "seq_scan", "seq_tup_read", "idx_scan", "bytes", "scans")


class DictionaryUnavailable(Exception):
    """The database could not be read; the message names why, never a secret."""


def read_catalog(conn: psycopg.Connection) -> dict[str, Any]:
    """{"schemas": {schema: {owner, comment, tables: {name: {...}}}}} of the connected database."""
    schemas: dict[str, Any] = {}
    for name, owner, comment in conn.execute(SCHEMAS_SQL):
        schemas[name] = {"owner": owner, "comment": comment, "tables": {}}
    by_oid: dict[int, dict] = {}
    for oid, schema, name, kind, owner, comment, reltuples, size, seq, seq_read, idx in conn.execute(RELATIONS_SQL):
        table = {"kind": KINDS.get(kind, kind), "owner": owner, "comment": comment,
                 # reltuples is -1 for a table never analysed (PostgreSQL 14+): unknown, not negative.
                 "rows_estimate": None if reltuples is None or reltuples < 0 else int(reltuples),
                 "total_bytes": size, "seq_scan": seq, "seq_tup_read": seq_read, "idx_scan": idx,
                 "columns": [], "constraints": [], "indexes": []}
        schemas.setdefault(schema, {"owner": None, "comment": None, "tables": {}})["tables"][name] = table
        by_oid[oid] = table
    for oid, name, type_, not_null, default, comment in conn.execute(COLUMNS_SQL):
        if oid in by_oid:
            by_oid[oid]["columns"].append({"name": name, "type": type_, "nullable": not not_null, "default": default,
                                           "comment": comment})
    for oid, name, contype, definition, references in conn.execute(CONSTRAINTS_SQL):
        if oid in by_oid:
            by_oid[oid]["constraints"].append({"name": name, "type": CONSTRAINT_TYPES.get(contype, contype),
                                               "definition": definition, "references": references})
    for oid, name, definition, unique, primary, size, scans in conn.execute(INDEXES_SQL):
        if oid in by_oid:
            by_oid[oid]["indexes"].append({"name": name, "definition": definition, "unique": unique,
                                           "primary": primary, "bytes": size, "scans": scans})
    return {"schemas": schemas}


def read_dictionary(instance: Any, database: str) -> dict[str, Any]:
    try:
        with connect(instance, database, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                     statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
            return read_catalog(conn)
    except psycopg.Error as exc:
        raise DictionaryUnavailable(f"{instance.name}/{database}: {describe_error(exc)}") from exc


def managed_databases(instance: Any) -> list[str]:
    """The databases of the instance the portal manages (admin_login.MANAGED_DATABASE)."""
    query = sql.SQL("SELECT datname::text FROM pg_catalog.pg_database WHERE ") + MANAGED_DATABASE + sql.SQL(
        " ORDER BY 1")
    try:
        with connect(instance, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                     statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
            return [row[0] for row in conn.execute(query)]
    except psycopg.Error as exc:
        raise DictionaryUnavailable(f"{instance.name}: {describe_error(exc)}") from exc


def _without_figures(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_figures(v) for k, v in value.items() if k not in FIGURES}
    if isinstance(value, list):
        return [_without_figures(v) for v in value]
    return value


def structure(body: dict) -> dict:
    return _without_figures(body)


def digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(structure(body), sort_keys=True).encode()).hexdigest()


def _by_name(items: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in items}


def diff(old: dict | None, new: dict) -> list[dict]:
    """What changed from `old` to `new`: [{action, object, schema, table, name, before, after}]."""
    changes: list[dict] = []

    def add(action: str, kind: str, schema: str, table: str | None, name: str | None, before: Any, after: Any) -> None:
        changes.append({"action": action, "object": kind, "schema": schema, "table": table, "name": name,
                        "before": before, "after": after})

    old_schemas = (old or {}).get("schemas", {})
    new_schemas = new.get("schemas", {})
    for schema in sorted(set(old_schemas) | set(new_schemas)):
        before, after = old_schemas.get(schema), new_schemas.get(schema)
        if before is None or after is None:
            add("added" if before is None else "removed", "schema", schema, None, None, None, None)
            if old is None or after is None:
                continue
            before = {"owner": None, "comment": None, "tables": {}}
        for field in ("owner", "comment"):
            if before.get(field) != after.get(field) and old_schemas.get(schema) is not None:
                add("altered", f"schema {field}", schema, None, None, before.get(field), after.get(field))
        old_tables, new_tables = before["tables"], after["tables"]
        for table in sorted(set(old_tables) | set(new_tables)):
            t_old, t_new = old_tables.get(table), new_tables.get(table)
            if t_old is None or t_new is None:
                add("added" if t_old is None else "removed", (t_new or t_old)["kind"], schema, table, None, None, None)
                continue
            for field in ("kind", "owner", "comment"):
                if t_old.get(field) != t_new.get(field):
                    add("altered", f"table {field}", schema, table, None, t_old.get(field), t_new.get(field))
            for part, kind in (("columns", "column"), ("constraints", "constraint"), ("indexes", "index")):
                o, n = _by_name(structure(t_old)[part]), _by_name(structure(t_new)[part])
                for name in sorted(set(o) | set(n)):
                    if name not in o:
                        add("added", kind, schema, table, name, None, n[name])
                    elif name not in n:
                        add("removed", kind, schema, table, name, o[name], None)
                    elif o[name] != n[name]:
                        add("altered", kind, schema, table, name, o[name], n[name])
    return changes
