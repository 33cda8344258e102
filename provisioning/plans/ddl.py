"""DDL plan: the requester's SQL, parsed, scope-checked and reviewed, run as the schema's owner role.

Payload `{database, schema, sql}`; validate() adds `owner_role` (from the portal's ManagedSchema
record) so that render() needs nothing but the stored payload.

The plan:
    SET LOCAL search_path TO <schema>       unqualified names resolve in the schema
    SET LOCAL ROLE <owner role>             objects are created and owned by the schema's owner
                                            role, so its default privileges apply to them
    <statement 1> ... <statement n>         pglast's deparse of each checked statement, every
                                            function call pinned to pg_catalog
    RESET ROLE                              back to the executor login for the marker
    SET ROLE <owner role>                   (only with concurrent index steps) for the session
    <CREATE / DROP INDEX CONCURRENTLY ...>  each its own step, after the transaction
    RESET ROLE

The whole plan runs over the team's executor login (provisioning/executor_logins.py), never the
instance's admin login: a statement that undoes the SET ROLE reaches only that login, which
holds no privilege of its own, or another of the team's owner roles.
CREATE INDEX CONCURRENTLY cannot run in a transaction: it becomes its own step
(transactional=False), made idempotent with IF NOT EXISTS and with its table qualified by the
schema (SET LOCAL does not reach a step outside the transaction, so a session-level SET ROLE
to the owner precedes them: building an index needs its table's owner). The scope check requires such
statements to come last in the request, so the plan's order is the order things run in.

A CREATE INDEX CONCURRENTLY that fails (timeout, duplicate key, cancelled) leaves an INVALID
index behind, which IF NOT EXISTS would then take for done. So each is preceded by a step that
drops the same-named index CONCURRENTLY only when it exists and is INVALID: a retry builds it
again, a VALID index is left alone.

Why user SQL text in sql.SQL is safe here (the one place in the portal where it happens): the
text is not the requester's; it is pglast's deparse of a parse tree that passed the scope
allow-list (provisioning/ddl/scope.py), and parse.normalise() proves that the text parses back
to exactly that tree, as one statement. Nothing the requester typed (comments, quoting tricks,
a second statement) reaches the server except through that tree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pglast import ast
from psycopg import sql

from portal.choices import Environment
from portal.errors import InvalidPayload
from provisioning.ddl import functions as ddl_functions
from provisioning.ddl import parse as ddl_parse
from provisioning.ddl import rules as ddl_rules
from provisioning.ddl import scope as ddl_scope
from provisioning.plans import Step
from provisioning.plans.checks import Errors, check_keys
from provisioning.plans.context import PlanContext

KEYS = {"database", "schema", "sql"}
# review: findings from the rules, given table facts the service read; dry_run: the service runs
# the plan and rolls it back (both I/O stays in the service: provisioning/ddl/facts.py, provisioning/dry_run.py).
HOOKS = frozenset({"review", "dry_run"})
# A dry run touches the target: only where a failed or slow statement costs nothing.
DRY_RUN_ENVIRONMENTS = frozenset({Environment.DEV, Environment.STAGING})


@dataclass(frozen=True)
class FactsWanted:
    """The tables whose facts (size, columns) review() judges by."""

    database: str
    schema: str
    tables: frozenset[str]
IDENTIFIER_MAX_BYTES = 63


def _identifier(payload: dict, key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload.field(f"payload.{key}", "this field is required")
    if len(value.encode()) > IDENTIFIER_MAX_BYTES:
        raise InvalidPayload.field(f"payload.{key}", f"at most {IDENTIFIER_MAX_BYTES} bytes")
    return value


def checked_statements(payload: dict) -> list[ddl_parse.Statement]:
    """Parse, scope-check and normalise the payload's SQL (raises InvalidPayload)."""
    statements = ddl_parse.parse(payload.get("sql"))
    ddl_scope.check(statements, schema=payload["schema"])
    for statement in statements:
        ddl_functions.pin_to_builtins(statement.node)
    return [ddl_parse.normalise(statement) for statement in statements]


def validate(payload: Any, ctx: PlanContext) -> dict:
    """Keys, the team's schema (its owner role from the portal's records) and the SQL's scope.

    The review rules run afterwards in review(), with the table facts the service read."""
    errors = Errors()
    # owner_role is not the requester's to choose: it comes from the portal's ManagedSchema.
    check_keys(errors, payload, required=KEYS, optional=set())
    errors.raise_if_any()
    database = _identifier(payload, "database")
    schema = _identifier(payload, "schema")
    if not isinstance(payload.get("sql"), str):
        raise InvalidPayload.field("payload.sql", "enter the SQL to run")
    managed = ctx.schema(database, schema)
    if managed is None or managed.team_id != ctx.team_id:
        raise InvalidPayload.field(
            "payload.schema",
            f"{schema} is not a schema of team {ctx.team} in database {database} on {ctx.instance.name}")
    normalised = {"database": database, "schema": schema, "sql": payload["sql"], "owner_role": managed.owner_role}
    checked_statements(normalised)  # raises InvalidPayload on SQL outside the scope
    return normalised


def facts_wanted(payload: dict) -> FactsWanted:
    """Which tables' facts review() needs (read by the service: provisioning/ddl/facts.py)."""
    return FactsWanted(database=payload["database"], schema=payload["schema"],
                       tables=frozenset(ddl_scope.referenced_tables(checked_statements(payload))))


def review(payload: dict, ctx: PlanContext, *, facts: ddl_rules.Facts | None,
           facts_error: str | None = None) -> dict:
    """Findings, risk and risk reasons of a validated DDL payload, given the tables' facts.

    `facts` None (with `facts_error` saying why, secret-free): the cluster could not be read, so
    the size-dependent rules are skipped and an info finding says so. The rules on are those of
    the instance's environment (ctx.enabled_ddl_rules). Error findings raise InvalidPayload
    (payload.sql).
    """
    statements = checked_statements(payload)
    extra: list[ddl_rules.Finding] = []
    if facts is None:
        facts = {}
        extra.append(ddl_rules.Finding(
            "ddl.facts_unavailable", ddl_rules.INFO,
            f"table facts could not be read ({facts_error}): size-dependent rules were not evaluated",
            0, ""))
    enabled = set(ctx.enabled_ddl_rules) if ctx.enabled_ddl_rules is not None else set(ddl_rules.RULES)
    findings = ddl_rules.evaluate(statements, facts=facts, enabled=enabled) + extra
    errors = ddl_rules.errors_of(findings)
    if errors:
        messages = [f"[{f.rule}] {f.message}" for f in errors]
        raise InvalidPayload(messages[0], errors={"payload.sql": messages})
    risk, reasons = ddl_rules.ddl_risk(findings)
    return {"findings": [f.as_dict() for f in findings], "risk": risk, "risk_reasons": reasons}


def dry_run_wanted(ctx: PlanContext) -> bool:
    """Whether the service dry-runs the plan at submit (dev and staging; see provisioning/dry_run.py)."""
    return ctx.instance.environment in DRY_RUN_ENVIRONMENTS


def _concurrent_index(statement: ddl_parse.Statement, schema: str) -> ddl_parse.Statement:
    """The statement made idempotent (IF [NOT] EXISTS) and qualified with the schema."""
    node = copy.deepcopy(statement.node)
    if isinstance(node, ast.IndexStmt):
        node.if_not_exists = True
        node.relation.schemaname = schema
    else:  # DROP INDEX CONCURRENTLY (one index, by the grammar)
        node.missing_ok = True
        node.objects = tuple(
            (ast.String(sval=schema), *parts) if len(parts) == 1 else tuple(parts) for parts in node.objects)
    return ddl_parse.normalise(ddl_parse.Statement(statement.index, node, statement.source, ""))


def _drop_invalid_index(statement: ddl_parse.Statement, schema: str) -> Step:
    """DROP INDEX CONCURRENTLY of the index `statement` creates, only when it is INVALID (a failed build)."""
    name = statement.node.idxname  # required for CONCURRENTLY by the scope check (scope.index_name)
    invalid = sql.SQL(
        "SELECT EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = {schema} AND c.relname = {name} AND NOT i.indisvalid)"
    ).format(schema=sql.Literal(schema), name=sql.Literal(name))
    return Step(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)),
                transactional=False, only_if=invalid, index_build=True)


def numbered_steps(payload: dict) -> list[tuple[int | None, Step]]:
    """The plan's steps, each with the 1-based index of the user statement it runs (None: the portal's)."""
    schema, owner = payload["schema"], payload["owner_role"]
    steps: list[tuple[int | None, Step]] = [
        (None, Step(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))),
        (None, Step(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))),
    ]
    concurrent: list[tuple[int | None, Step]] = []
    for statement in checked_statements(payload):
        if ddl_scope.is_concurrent_index(statement):
            # The scope check keeps these at the end of the request, so running them after the
            # transaction (as the executor does with every non-transactional step) keeps the order.
            if isinstance(statement.node, ast.IndexStmt):
                concurrent.append((None, _drop_invalid_index(statement, schema)))
            statement = _concurrent_index(statement, schema)
            concurrent.append((statement.index, Step(sql.SQL(statement.text), transactional=False,
                                                      index_build=True, user_sql=True)))
        else:
            steps.append((statement.index, Step(sql.SQL(statement.text), user_sql=True)))
    # Back to the executor login inside the transaction: it writes the applied-change marker
    # (dbportal_meta) after the plan's steps, which the owner role may not touch.
    steps.append((None, Step(sql.SQL("RESET ROLE"))))
    if concurrent:
        # Outside the transaction SET LOCAL is gone: the index steps run as the owner role for the
        # session (the executor login itself holds no privilege; its connection is not reused).
        concurrent.insert(0, (None, Step(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)), transactional=False)))
        concurrent.append((None, Step(sql.SQL("RESET ROLE"), transactional=False)))
    return steps + concurrent


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    return [step for _, step in numbered_steps(payload)]


def database(payload: dict) -> str | None:
    return payload["database"]
