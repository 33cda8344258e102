"""The data dictionary of one managed database, read from its catalog (issue #21).

`read_dictionary(instance, database)` opens the instance's admin connection to the database
(provisioning/connections.py) and reads schemas (owner, comment), relations (tables, partitioned
tables, views, materialised views, foreign tables: owner, row estimate, size estimate, scan
counts), comments, columns (type, nullability), defaults, constraints (definition, referenced
table) and indexes (definition, size, scans): nine short queries whatever the number of tables,
the costly catalog functions (pg_get_indexdef, format_type, pg_total_relation_size) only where
nothing cheaper says the same. System schemas and the portal's own `dbportal_meta` are left out.
Catalogs and the statistics functions are readable by any role, so the least-privilege admin
login sees every object and figure.

`structure(body)` is the part that describes the schema (no sizes, estimates or counters): two
snapshots with the same structure digest describe the same database. `diff(old, new)` lists what
changed between two structures. Nothing here writes to the portal.
"""

from __future__ import annotations

import functools
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

# Sizes are estimates from relpages (as of the last VACUUM / ANALYZE), like the row estimate:
# pg_total_relation_size would stat every file of every table (the monitoring sample has the
# exact size of the biggest tables). Scan counts straight from the statistics functions, not the
# pg_stat_user_tables view (which computes a dozen figures per table).
RELATIONS_SQL = sql.SQL("""
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, pg_catalog.pg_get_userbyid(c.relowner)::text,
       c.reltuples::float8, c.relpages::bigint + coalesce(t.relpages, 0)::bigint,
       pg_catalog.pg_stat_get_numscans(c.oid), pg_catalog.pg_stat_get_tuples_returned(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition AND {schema_filter}
ORDER BY 2, 3
""").format(schema_filter=_SCHEMA_FILTER)

# Comments of relations and columns, one pass (a join per column row costs more than the lot).
DESCRIPTIONS_SQL = sql.SQL("""
SELECT objoid, objsubid, description FROM pg_catalog.pg_description
WHERE classoid = 'pg_catalog.pg_class'::regclass
""")

# format_type only where a type modifier needs it (numeric(12,2), varchar(40)); other types by
# name from TYPES_SQL, once per type.
COLUMNS_SQL = sql.SQL("""
SELECT a.attrelid, a.attname::text, a.atttypid,
       CASE WHEN a.atttypmod <> -1 THEN pg_catalog.format_type(a.atttypid, a.atttypmod) END,
       a.attnotnull, a.attnum
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND {schema_filter}
ORDER BY a.attrelid, a.attnum
""").format(schema_filter=_SCHEMA_FILTER)

TYPES_SQL = sql.SQL("SELECT oid, pg_catalog.format_type(oid, NULL) FROM pg_catalog.pg_type WHERE typtype <> 'c'")

DEFAULTS_SQL = sql.SQL("""
SELECT d.adrelid, d.adnum, pg_catalog.pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attrdef d
JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT c.relispartition AND {schema_filter}
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

# pg_get_indexdef only for what plain columns cannot say (expressions, a predicate, DESC / NULLS
# FIRST); a plain index's definition is written from its columns (see _index_definition).
INDEXES_SQL = sql.SQL("""
SELECT i.indrelid, ic.relname::text, i.indisunique, i.indisprimary, am.amname::text, i.indkey::int2[],
       i.indnkeyatts, ic.relpages::bigint, pg_catalog.pg_stat_get_numscans(i.indexrelid),
       CASE WHEN i.indexprs IS NOT NULL OR i.indpred IS NOT NULL OR 0 <> ANY (i.indoption::int2[])
            THEN pg_catalog.pg_get_indexdef(i.indexrelid) END
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT c.relispartition AND {schema_filter}
ORDER BY i.indrelid, ic.relname
""").format(schema_filter=_SCHEMA_FILTER)

BLOCK_SIZE_SQL = sql.SQL("SELECT current_setting('block_size')::int")

KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
CONSTRAINT_TYPES = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion",
                    "t": "trigger", "n": "not null"}
# Figures of a table or index, not part of its structure.
FIGURES = ("rows_estimate", "total_bytes", "seq_scan", "seq_tup_read", "idx_scan", "bytes", "scans")


class DictionaryUnavailable(Exception):
    """The database could not be read; the message names why, never a secret."""


@functools.lru_cache(maxsize=65536)
def _quoted(name: str) -> str:
    """An identifier quoted by psycopg (cached: the same column names recur across tables)."""
    return sql.Identifier(name).as_string(None)


def _index_definition(schema: str, table: str, name: str, unique: bool, method: str, columns: list[str],
                      key_columns: int) -> str:
    """The CREATE INDEX text of a plain index (columns only), shown in the dictionary. Display
    text, never executed: every name in it quoted by psycopg.sql.Identifier (through _quoted)."""
    keys = ", ".join(_quoted(c) for c in columns[:key_columns])
    text = (("CREATE UNIQUE INDEX " if unique else "CREATE INDEX ") + _quoted(name) + " ON " + _quoted(schema) + "."
            + _quoted(table) + " USING " + _quoted(method) + " (" + keys + ")")
    if len(columns) > key_columns:
        text += " INCLUDE (" + ", ".join(_quoted(c) for c in columns[key_columns:]) + ")"
    return text


def read_catalog(conn: psycopg.Connection) -> dict[str, Any]:
    """{"schemas": {schema: {owner, comment, tables: {name: {...}}}}} of the connected database."""
    block_size = conn.execute(BLOCK_SIZE_SQL).fetchone()[0]
    comments: dict[tuple[int, int], str] = {(oid, sub): text for oid, sub, text in conn.execute(DESCRIPTIONS_SQL)}
    schemas: dict[str, Any] = {}
    for name, owner, comment in conn.execute(SCHEMAS_SQL):
        schemas[name] = {"owner": owner, "comment": comment, "tables": {}}
    by_oid: dict[int, dict] = {}
    where: dict[int, tuple[str, str]] = {}
    for oid, schema, name, kind, owner, reltuples, pages, seq, seq_read in conn.execute(RELATIONS_SQL):
        has_storage = kind in ("r", "p", "m")
        table = {"kind": KINDS.get(kind, kind), "owner": owner, "comment": comments.get((oid, 0)),
                 # reltuples is -1 for a table never analysed (PostgreSQL 14+): unknown, not negative.
                 "rows_estimate": None if reltuples is None or reltuples < 0 else int(reltuples),
                 "total_bytes": int(pages) * block_size if has_storage else None,
                 "seq_scan": seq if has_storage else None, "seq_tup_read": seq_read if has_storage else None,
                 "idx_scan": None, "columns": [], "constraints": [], "indexes": []}
        schemas.setdefault(schema, {"owner": None, "comment": None, "tables": {}})["tables"][name] = table
        by_oid[oid] = table
        where[oid] = (schema, name)
    types = dict(conn.execute(TYPES_SQL).fetchall())
    defaults = {(oid, num): text for oid, num, text in conn.execute(DEFAULTS_SQL)}
    names: dict[tuple[int, int], str] = {}
    current_oid: int | None = None
    current: list | None = None
    for oid, name, type_oid, formatted, not_null, num in conn.execute(COLUMNS_SQL):
        names[(oid, num)] = name
        if oid != current_oid:
            current_oid, table = oid, by_oid.get(oid)
            current = None if table is None else table["columns"]
        if current is not None:
            current.append({"name": name, "type": formatted or types.get(type_oid) or str(type_oid),
                            "nullable": not not_null, "default": defaults.get((oid, num)),
                            "comment": comments.get((oid, num))})
    for oid, name, contype, definition, references in conn.execute(CONSTRAINTS_SQL):
        if oid in by_oid:
            by_oid[oid]["constraints"].append({"name": name, "type": CONSTRAINT_TYPES.get(contype, contype),
                                               "definition": definition, "references": references})
    for oid, name, unique, primary, method, keys, key_count, pages, scans, full in conn.execute(INDEXES_SQL):
        table = by_oid.get(oid)
        if table is None:
            continue
        schema, table_name = where[oid]
        definition = full or _index_definition(schema, table_name, name, unique, method,
                                               [names.get((oid, k), str(k)) for k in keys], key_count)
        table["indexes"].append({"name": name, "definition": definition, "unique": unique, "primary": primary,
                                 "bytes": int(pages) * block_size, "scans": scans})
        if table["total_bytes"] is not None:
            table["total_bytes"] += int(pages) * block_size
        table["idx_scan"] = (table["idx_scan"] or 0) + (scans or 0)
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
