"""Team check queries of restore drills: the SQL accepted at input, and how a drill runs it.

A team that owns schemas of a database writes its own checks (portal/services/team_checks.py);
its SQL is hostile until proven otherwise, so it is held twice:

At input (`clean_sql`), by PostgreSQL's own parser (pglast) and an allow-list: exactly one
statement, a plain SELECT (UNION, VALUES and read-only WITH included) built only of expression
and query nodes: a data-modifying CTE, SELECT INTO, FOR UPDATE/SHARE, a parameter, TABLESAMPLE,
XML or JSON table functions are other node kinds and are refused. Every table named must be
schema-qualified with one of the team's schemas in that database (a bare name only for a CTE of
the query). Functions come from the DDL allow-list of built-ins (provisioning/ddl/functions.py,
no `pg_*`, nothing that runs a query string, reads files or changes settings; the sequence
functions are left out too) and are pinned to `pg_catalog`; types and operators may be qualified
only with `pg_catalog`. What is stored and run is pglast's deparse of the checked tree, proven to
round-trip, never the text as typed.

At drill time (`run_team_checks`), on the scratch cluster only: each team gets a role of its own
(`dbportal_drill_team_<team id>`) that may log in, is nothing else (no superuser, no inherited
roles, no predefined roles), defaults to read-only transactions with a statement timeout, a
temporary-file limit and `search_path = pg_catalog`, and holds USAGE and SELECT on the team's
schemas of that database only. The query runs connected as that role (never SET ROLE from the
superuser), in a READ ONLY transaction that is rolled back, as one prepared statement (which
holds one command, so nothing can leave the transaction). Only the verdict, a reason and the
duration are recorded; for `equals` the first value, cut short; never the rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pglast
import psycopg
from pglast import ast
from pglast.parser import ParseError
from psycopg import sql
from psycopg.conninfo import make_conninfo

from portal.errors import InvalidPayload
from provisioning.ddl.functions import ALLOWED_FUNCTIONS, allowed, pin_to_builtins
from provisioning.ddl.parse import deparse, walk

FIELD = "sql"
MAX_SQL_CHARS = 4000
ROLE_PREFIX = "dbportal_drill_team_"
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 5_000
TEMP_FILE_LIMIT = "256MB"
SHOWN_VALUE_CHARS = 40
REASON_CHARS = 200

# The node kinds a check query may be made of: queries and expressions, nothing that writes,
# locks, creates, reads parameters or reaches outside the tables named.
ALLOWED_NODES = frozenset({
    "SelectStmt", "ResTarget", "ColumnRef", "A_Star", "A_Const", "Integer", "Float", "Boolean", "String",
    "BitString", "A_Expr", "BoolExpr", "NullTest", "BooleanTest", "FuncCall", "WindowDef", "SortBy", "RangeVar",
    "Alias", "JoinExpr", "RangeSubselect", "RangeFunction", "SubLink", "CaseExpr", "CaseWhen", "CoalesceExpr",
    "MinMaxExpr", "TypeCast", "TypeName", "A_ArrayExpr", "A_Indirection", "A_Indices", "RowExpr", "WithClause",
    "CommonTableExpr", "GroupingSet", "SQLValueFunction", "CollateClause",
})
# Said in words for the commonest refusals; any other node kind is named as PostgreSQL calls it.
_REFUSED_WORDS = {
    "InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "MergeStmt": "MERGE",
    "IntoClause": "SELECT INTO", "LockingClause": "FOR UPDATE / FOR SHARE", "ParamRef": "a parameter ($n)",
    "RangeTableSample": "TABLESAMPLE", "RangeTableFunc": "XMLTABLE", "XmlExpr": "an XML expression",
}
# Read-only built-ins: the DDL allow-list without the sequence functions (nextval, setval write).
CHECK_FUNCTIONS = frozenset().union(*(names for group, names in ALLOWED_FUNCTIONS.items() if group != "sequences"))


def _refuse(message: str) -> InvalidPayload:
    return InvalidPayload.field(FIELD, message)


def _qualified_by_catalog(names: Iterable[Any]) -> bool:
    """True for a plain name or one qualified with pg_catalog (functions, operators, types)."""
    parts = [getattr(n, "sval", None) for n in names]
    return len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")


def _check_nodes(tree: ast.Node) -> None:
    """Node kinds, functions, operators and types anywhere in the tree (scope-free rules)."""
    for node in walk(tree):
        kind = type(node).__name__
        if kind not in ALLOWED_NODES:
            raise _refuse(f"only a plain SELECT may run in a drill: {_REFUSED_WORDS.get(kind, kind)} is not allowed")
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval
            if not _qualified_by_catalog(node.funcname) or not allowed(name) or name.lower() not in CHECK_FUNCTIONS:
                raise _refuse(f"function {'.'.join(n.sval for n in node.funcname)}() is not on the allow-list "
                              "of read-only built-ins")
        elif isinstance(node, ast.A_Expr) and node.name and not _qualified_by_catalog(node.name):
            raise _refuse("operators may be qualified only with pg_catalog")
        elif isinstance(node, ast.TypeName) and (not _qualified_by_catalog(node.names) or node.pct_type):
            raise _refuse("types may be qualified only with pg_catalog")


def _check_tables(node: Any, schemas: set[str], ctes: frozenset[str]) -> None:
    """Every table named is in one of the team's schemas, or is a CTE *in scope* where it is named.

    Scope as PostgreSQL resolves it: a WITH list's names are visible in the statement it belongs
    to and below; without RECURSIVE a CTE sees only the siblings before it. A bare name out of
    every CTE's scope would resolve through search_path (pg_catalog) and read the catalogs, so it
    is refused even when a CTE of that name exists elsewhere in the query.
    """
    if isinstance(node, tuple | list):
        for item in node:
            _check_tables(item, schemas, ctes)
        return
    if not isinstance(node, ast.Node):
        return
    if isinstance(node, ast.RangeVar):
        if node.catalogname:
            raise _refuse(f"{node.catalogname}.{node.schemaname}.{node.relname}: no database names")
        if node.schemaname is None:
            if node.relname not in ctes:
                raise _refuse(f"table {node.relname}: qualify it with one of your team's schemas "
                              f"({', '.join(sorted(schemas)) or 'none in this database'})")
        elif node.schemaname not in schemas:
            raise _refuse(f"table {node.schemaname}.{node.relname}: schema {node.schemaname} is not "
                          "one of your team's schemas in this database")
        return
    if isinstance(node, ast.SelectStmt) and node.withClause is not None:
        with_clause = node.withClause
        names = [cte.ctename for cte in with_clause.ctes]
        visible = ctes
        if with_clause.recursive:
            visible = ctes | frozenset(names)
            for cte in with_clause.ctes:
                _check_tables(cte.ctequery, schemas, visible)
        else:
            for cte in with_clause.ctes:
                _check_tables(cte.ctequery, schemas, visible)
                visible = visible | {cte.ctename}
        for attr in type(node).__slots__:
            if attr != "withClause":
                _check_tables(getattr(node, attr, None), schemas, visible)
        return
    for attr in type(node).__slots__:
        _check_tables(getattr(node, attr, None), schemas, ctes)


def clean_sql(text: object, *, schemas: Iterable[str]) -> str:
    """The check query as it will run, or InvalidPayload naming `sql` with the reason.

    `schemas`: the team's schemas in the database (the only ones its tables may come from).
    """
    if not isinstance(text, str) or not text.strip():
        raise _refuse("enter one SELECT query")
    if len(text) > MAX_SQL_CHARS:
        raise _refuse(f"at most {MAX_SQL_CHARS} characters")
    if "\x00" in text:
        raise _refuse("the SQL contains a NUL character")
    try:
        text.encode()
        statements = pglast.parse_sql(text)
    except UnicodeEncodeError:
        raise _refuse("the SQL is not valid Unicode text") from None
    except ParseError as exc:
        raise _refuse(f"syntax error: {exc.args[0] if exc.args else exc}") from None
    except (RecursionError, ValueError, MemoryError) as exc:
        raise _refuse(f"the SQL could not be parsed ({type(exc).__name__})") from None
    if len(statements) != 1:
        raise _refuse(f"exactly one statement, found {len(statements)}")
    tree = statements[0].stmt
    if not isinstance(tree, ast.SelectStmt):
        kind = type(tree).__name__
        raise _refuse(f"only a plain SELECT may run in a drill: {_REFUSED_WORDS.get(kind, kind)} is not allowed")
    _check_nodes(tree)
    try:
        _check_tables(tree, set(schemas), frozenset())
    except RecursionError:
        raise _refuse("the query is nested too deeply") from None
    pin_to_builtins(tree)
    try:
        normalised = deparse(tree)
        again = pglast.parse_sql(normalised)
    except (ParseError, NotImplementedError, RecursionError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise _refuse(f"this query cannot be normalised safely ({type(exc).__name__})") from None
    if len(again) != 1 or again[0].stmt != tree:
        raise _refuse("this query does not survive normalisation unchanged; rewrite it")
    return normalised


# --- at drill time ------------------------------------------------------------------------------
class RoleTaken(Exception):
    """The restored copy already holds a role with the name of a team's check role."""


def role_for(team_id: int) -> str:
    return f"{ROLE_PREFIX}{int(team_id)}"


def _as_text(value: Any) -> str:
    """A first value as compared with `expected`: PostgreSQL's spelling of booleans and NULL."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    # Numbers and text as PostgreSQL writes them: psycopg builds a numeric's Decimal from that text.
    return str(value)


def _short(value: str) -> str:
    return value if len(value) <= SHOWN_VALUE_CHARS else value[: SHOWN_VALUE_CHARS - 1] + "…"


def _reason(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    lines = str(exc).strip().splitlines()
    primary = getattr(diag, "message_primary", None) or (lines[0] if lines else "")
    state = getattr(diag, "sqlstate", None) or ""
    return f"{state} {primary}".strip()[:REASON_CHARS] or type(exc).__name__


def verdict(expect: str, expected: str, row: tuple | None) -> tuple[bool, str]:
    """(passed, reason) for the first row a check returned (None: no row)."""
    if expect == "no_rows":
        return row is None, "no row came back" if row is None else "a row came back (expected none)"
    if expect == "equals":
        if row is None:
            return False, f"no row came back (expected {_short(expected)!r})"
        got = _as_text(row[0])
        return got == expected, f"first value {_short(got)!r}, expected {_short(expected)!r}"
    return row is not None, "a row came back" if row is not None else "no row came back (expected at least one)"


def _create_role(cluster, role: str) -> None:
    """Create the team's role on the scratch cluster. The superuser does this; the query never runs as it.

    A role of that name already in the restored copy is not the portal's (it came with the data and
    may hold anything), so it is never reused: the team's checks fail instead."""
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role]).fetchone():
            raise RoleTaken(f"a role named {role} already exists in the restored copy; not reused")
        ident = sql.Identifier(role)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION"
                                 " NOBYPASSRLS CONNECTION LIMIT 2").format(ident))
        for name, value in (("default_transaction_read_only", "on"),
                            ("statement_timeout", str(STATEMENT_TIMEOUT_MS)),
                            ("lock_timeout", str(LOCK_TIMEOUT_MS)),
                            ("idle_in_transaction_session_timeout", str(STATEMENT_TIMEOUT_MS)),
                            ("temp_file_limit", TEMP_FILE_LIMIT), ("search_path", "pg_catalog")):
            conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(ident, sql.Identifier(name),
                                                                     sql.Literal(value)))


def _grant_schemas(cluster, role: str, database: str, schemas: list[str]) -> list[str]:
    """Grant the role USAGE and SELECT on the team's schemas of `database` the copy holds; those granted."""
    granted = []
    with psycopg.connect(cluster.socket_conninfo(database), autocommit=True, connect_timeout=5) as conn:
        present = {row[0] for row in conn.execute(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)", [schemas]).fetchall()}
        for schema in sorted(present):
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)))
            granted.append(schema)
    return granted


def _run_one(cluster, role: str, check: dict) -> tuple[bool, str]:
    conninfo = make_conninfo(cluster.socket_conninfo(check["database"]), user=role)
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        conn.execute("BEGIN READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT_MS)))
        conn.execute("SET LOCAL search_path = pg_catalog")
        # The checked, normalised text; prepared, so it is one command whatever it holds.
        cursor = conn.execute(check["sql"].encode(), prepare=True)  # type: ignore[call-overload]
        row = cursor.fetchone() if cursor.description else None
        conn.rollback()
    return verdict(check["expect"], check.get("expected", ""), row)


def run_team_checks(cluster, team_checks: list[dict], databases: list[str], record) -> None:
    """Run the teams' checks on the restored copy; `record(entry)` keeps each result.

    Each check: {"team_id", "team", "name", "database", "sql", "expect", "expected", "schemas"}.
    Each entry: {"name": "team:<team>:<name>", "team", "ok", "detail", "duration_ms"}.
    """
    roles: dict[int, str] = {}  # team id → "" when ready, else why not
    grants: dict[tuple[int, str], str] = {}  # (team id, database) → "" when granted, else why not
    for check in team_checks:
        entry: dict[str, Any] = {"name": f"team:{check['team']}:{check['name']}", "team": check["team"],
                                 "ok": False, "detail": "", "duration_ms": None}
        team_id, database = check["team_id"], check["database"]
        role = role_for(team_id)
        if database not in databases:
            entry["detail"] = f"database {database} is not in the restored copy"
            record(entry)
            continue
        if team_id not in roles:
            try:
                _create_role(cluster, role)
                roles[team_id] = ""
            except RoleTaken as exc:
                roles[team_id] = str(exc)
            except psycopg.Error as exc:
                roles[team_id] = f"the team's check role could not be created: {_reason(exc)}"
        if not roles[team_id] and (team_id, database) not in grants:
            try:
                granted = _grant_schemas(cluster, role, database, list(check["schemas"]))
                grants[(team_id, database)] = "" if granted else f"none of the team's schemas is in {database}"
            except psycopg.Error as exc:
                grants[(team_id, database)] = f"the team's schemas could not be granted: {_reason(exc)}"
        refusal = roles[team_id] or grants[(team_id, database)]
        if refusal:
            entry["detail"] = refusal
            record(entry)
            continue
        started = time.monotonic()
        try:
            entry["ok"], entry["detail"] = _run_one(cluster, role, check)
        except psycopg.Error as exc:
            entry["detail"] = _reason(exc)
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        record(entry)
