"""The data dictionary of one managed database, read from its catalog (issue #21).

`read_dictionary(instance, database)` opens the instance's admin connection to the database
(provisioning/connections.py) and reads schemas (owner, comment), relations (tables, partitioned
tables, views, materialised views, foreign tables: owner, row estimate, size estimate, scan
counts), comments, columns (type, nullability, default), constraints (definition, referenced
table) and indexes (definition, size, scans): seven set-based queries whatever the number of
tables, sent in two pipelined batches (read_catalog), the costly catalog functions
(pg_get_indexdef, format_type, pg_get_expr with a table, pg_total_relation_size) only where
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
       c.reltuples::float8, (c.relpages::bigint + coalesce(t.relpages, 0)::bigint) * b.size,
       pg_catalog.pg_stat_get_numscans(c.oid), pg_catalog.pg_stat_get_tuples_returned(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN (SELECT pg_catalog.current_setting('block_size')::bigint AS size) b
LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition AND {schema_filter}
ORDER BY 2, 3
""").format(schema_filter=_SCHEMA_FILTER)

# Comments of relations and columns, one pass (a join per column row costs more than the lot).
DESCRIPTIONS_SQL = sql.SQL("""
SELECT objoid, objsubid, description FROM pg_catalog.pg_description
WHERE classoid = 'pg_catalog.pg_class'::regclass
""")

# Every column of every relation in one set-based query, its default included (a hash join with
# pg_attrdef costs less than a query of its own, which must join pg_attribute again to tell
# generated columns). pg_get_expr is given the table only for a generated column, the one kind of
# default that names columns: with a table it opens the relation, which cost 5x the rest of the
# query on 1,000 tables. Type names: built-in types by name from TYPES_SQL, once per type; the
# modifiers of numeric, varchar and char written in Python (_with_modifier, as the server's
# typmodout functions do: format_type on every such column was a quarter of the query);
# format_type for other modifiers (time(3), bit(8), arrays) and types not built in (16384 is
# FirstNormalObjectId: enums, domains, composite and extension types). No ORDER BY: the sort cost
# more than putting the rare relation whose rows came out of attnum order back in order in _fold.
COLUMNS_SQL = sql.SQL("""
SELECT a.attrelid, a.attnum, a.attname::text, a.atttypid, a.atttypmod,
       CASE WHEN a.atttypid >= 16384 OR a.atttypmod <> -1 AND a.atttypid NOT IN ({modified})
            THEN pg_catalog.format_type(a.atttypid, NULLIF(a.atttypmod, -1)) END,
       NOT a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, CASE WHEN a.attgenerated <> '' THEN a.attrelid ELSE 0 END)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND {schema_filter}
""")

NUMERIC, VARCHAR, BPCHAR = 1700, 1043, 1042  # built-in type oids, fixed in every PostgreSQL
COLUMNS_SQL = COLUMNS_SQL.format(schema_filter=_SCHEMA_FILTER,
                                 modified=sql.SQL(", ").join(map(sql.Literal, (NUMERIC, VARCHAR, BPCHAR))))

TYPES_SQL = sql.SQL("SELECT oid, pg_catalog.format_type(oid, NULL) FROM pg_catalog.pg_type WHERE oid < 16384")

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
# FIRST): on 2,000 indexes it costs 4x the whole query. A plain index's definition is written
# from its columns in _fold.
INDEXES_SQL = sql.SQL("""
SELECT i.indrelid, ic.relname::text, i.indisunique, i.indisprimary, am.amname::text, i.indkey::int2[],
       i.indnkeyatts, ic.relpages::bigint * b.size, pg_catalog.pg_stat_get_numscans(i.indexrelid),
       CASE WHEN i.indexprs IS NOT NULL OR i.indpred IS NOT NULL OR 0 <> ANY (i.indoption::int2[])
            THEN pg_catalog.pg_get_indexdef(i.indexrelid) END
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN (SELECT pg_catalog.current_setting('block_size')::bigint AS size) b
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


@functools.lru_cache(maxsize=65536)
def _quoted(name: str) -> str:
    """An identifier quoted by psycopg (cached: the same names recur across tables and reads)."""
    return sql.Identifier(name).as_string(None)


@functools.lru_cache(maxsize=4096)
def _with_modifier(type_oid: int, typmod: int) -> str:
    """format_type(type_oid, typmod) of numeric, varchar and char, as numerictypmodout,
    varchartypmodout and bpchartypmodout write the modifier (4 is VARHDRSZ)."""
    if type_oid == NUMERIC:
        if typmod < 4:
            return "numeric"
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (((typmod - 4) & 0x7FF) ^ 1024) - 1024
        return f"numeric({precision},{scale})"
    name = "character varying" if type_oid == VARCHAR else "character"
    return f"{name}({typmod - 4})" if typmod > 4 else name


class _TypeNames(dict):
    """Type oid -> name of the built-in types; one it does not know shows as the number."""

    def __missing__(self, oid: int) -> str:
        return str(oid)


# A relation's columns as _fold gathers them: the column entries and their numbers (attnum), in
# the same order, and its column comments by number (None: none).
_Columns = tuple[list[dict], list[int], dict[int, str] | None]


def _position(columns: _Columns, number: int) -> int:
    """Where column `number` is in the relation's list, -1 if not there."""
    numbers = columns[1]
    at = number - 1  # where it is unless an earlier column was dropped
    if 0 <= at < len(numbers) and numbers[at] == number:
        return at
    return numbers.index(number) if number in numbers else -1


def _quoted_column(columns: _Columns | None, number: int) -> str:
    """Column `number` of a relation, quoted, for an index definition (the number itself when
    unknown: an expression column of an index is 0)."""
    at = -1 if columns is None else _position(columns, number)
    return str(number) if at < 0 else _quoted(columns[0][at]["name"])


def read_catalog(conn: psycopg.Connection) -> dict[str, Any]:
    """{"schemas": {schema: {owner, comment, tables: {name: {...}}}}} of the connected database.

    One query per kind of object for the whole database, in two pipelined batches: the server
    runs each batch's queries back to back without a round trip each, and runs the second
    (schemas, relations, constraints, indexes) while this side folds in the first (columns)."""
    with conn.pipeline():
        described, typed, listed = (conn.cursor(binary=True).execute(query) for query in (
            DESCRIPTIONS_SQL, TYPES_SQL, COLUMNS_SQL))
        descriptions = described.fetchall()  # waits for the whole first batch
        named, related, constrained, indexed = (conn.cursor(binary=True).execute(query) for query in (
            SCHEMAS_SQL, RELATIONS_SQL, CONSTRAINTS_SQL, INDEXES_SQL))
        return _fold(descriptions, typed, listed, named, related, constrained, indexed)


def _fold(descriptions: list[tuple], typed: psycopg.Cursor, listed: psycopg.Cursor, named: psycopg.Cursor,
          related: psycopg.Cursor, constrained: psycopg.Cursor, indexed: psycopg.Cursor) -> dict[str, Any]:
    """read_catalog's results into the dictionary, one pass over each; every lookup per row is a
    dict access keyed by oid. Each query is its own snapshot: a relation created between two of
    them is left out (or shows no columns)."""
    comments: dict[int, dict[int, str]] = {}  # {relation oid: {column number (0: the relation): text}}
    for oid, sub, text in descriptions:
        comments.setdefault(oid, {})[sub] = text

    types = _TypeNames(typed.fetchall())
    of: dict[int, _Columns] = {}  # by relation oid
    unordered: set[int] = set()
    current_oid = add_column = add_number = notes = None
    last = 0
    # In chunks: rows done with are freed as the loop goes, not held (and walked by the garbage
    # collector) until the end.
    while rows := listed.fetchmany(2000):
        for oid, num, name, type_oid, typmod, formatted, nullable, default in rows:
            if oid != current_oid:  # the rows of a relation mostly come together
                current_oid = oid
                entry = of.get(oid)
                if entry is None:
                    entry = of[oid] = ([], [], comments.get(oid))
                add_column, add_number, notes = entry[0].append, entry[1].append, entry[2]
                last = entry[1][-1] if entry[1] else 0
            if num < last:
                unordered.add(oid)
            last = num
            add_number(num)
            add_column({"name": name,
                        "type": formatted or (types[type_oid] if typmod == -1 else _with_modifier(type_oid, typmod)),
                        "nullable": nullable, "default": default, "comment": notes.get(num) if notes else None})
    for oid in unordered:
        columns, numbers, _ = of[oid]
        order = sorted(range(len(numbers)), key=numbers.__getitem__)
        columns[:] = [columns[i] for i in order]
        numbers[:] = [numbers[i] for i in order]

    schemas: dict[str, Any] = {name: {"owner": owner, "comment": comment, "tables": {}}
                               for name, owner, comment in named.fetchall()}
    by_oid: dict[int, dict] = {}
    where: dict[int, tuple[str, str]] = {}
    for oid, schema, name, kind, owner, reltuples, size, seq, seq_read in related.fetchall():
        has_storage = kind in ("r", "p", "m")
        notes = comments.get(oid)
        entry = of.get(oid)
        table = {"kind": KINDS.get(kind, kind), "owner": owner, "comment": notes.get(0) if notes else None,
                 # reltuples is -1 for a table never analysed (PostgreSQL 14+): unknown, not negative.
                 "rows_estimate": None if reltuples is None or reltuples < 0 else int(reltuples),
                 "total_bytes": size if has_storage else None,
                 "seq_scan": seq if has_storage else None, "seq_tup_read": seq_read if has_storage else None,
                 "idx_scan": None, "columns": [] if entry is None else entry[0], "constraints": [], "indexes": []}
        tables = schemas.get(schema)
        if tables is None:
            tables = schemas[schema] = {"owner": None, "comment": None, "tables": {}}
        tables["tables"][name] = table
        by_oid[oid] = table
        where[oid] = (schema, name)

    for oid, name, contype, definition, references in constrained.fetchall():
        table = by_oid.get(oid)
        if table is not None:
            table["constraints"].append({"name": name, "type": CONSTRAINT_TYPES.get(contype, contype),
                                         "definition": definition, "references": references})

    # A plain index's definition (display text, never run): every name quoted by psycopg.sql.
    prefixes: dict[int, tuple[str, _Columns | None]] = {}
    for oid, name, unique, primary, method, keys, key_count, size, scans, full in indexed.fetchall():
        table = by_oid.get(oid)
        if table is None:
            continue
        if full is None:
            known = prefixes.get(oid)
            if known is None:
                schema, table_name = where[oid]
                known = prefixes[oid] = (" ON " + _quoted(schema) + "." + _quoted(table_name) + " USING ", of.get(oid))
            on, entry = known
            if len(keys) == 1 == key_count:  # most indexes: one column, no INCLUDE
                columns_text = _quoted_column(entry, keys[0])
            else:
                quoted = [_quoted_column(entry, k) for k in keys]
                columns_text = ", ".join(quoted[:key_count])
                if len(quoted) > key_count:
                    columns_text += ") INCLUDE (" + ", ".join(quoted[key_count:])
            full = (("CREATE UNIQUE INDEX " if unique else "CREATE INDEX ") + _quoted(name) + on + _quoted(method)
                    + " (" + columns_text + ")")
        table["indexes"].append({"name": name, "definition": full, "unique": unique, "primary": primary,
                                 "bytes": size, "scans": scans})
        if table["total_bytes"] is not None:
            table["total_bytes"] += size
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
            s_old, s_new = structure(t_old), structure(t_new)  # once per table, not once per part
            for part, kind in (("columns", "column"), ("constraints", "constraint"), ("indexes", "index")):
                o, n = _by_name(s_old[part]), _by_name(s_new[part])
                for name in sorted(set(o) | set(n)):
                    if name not in o:
                        add("added", kind, schema, table, name, None, n[name])
                    elif name not in n:
                        add("removed", kind, schema, table, name, o[name], None)
                    elif o[name] != n[name]:
                        add("altered", kind, schema, table, name, o[name], n[name])
    return changes
