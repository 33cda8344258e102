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
from typing import Any

from pglast import ast
from psycopg import sql

from portal.errors import InvalidPayload
from provisioning.ddl import functions as ddl_functions
from provisioning.ddl import parse as ddl_parse
from provisioning.ddl import rules as ddl_rules
from provisioning.ddl import scope as ddl_scope
from provisioning.plans import Step
from provisioning.plans.checks import Errors, check_keys

KEYS = {"database", "schema", "sql"}
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


def validate(payload: Any, *, instance: Any, team: Any, user: Any) -> dict:
    from portal.models import ManagedSchema

    errors = Errors()
    # owner_role is not the requester's to choose: it comes from the portal's ManagedSchema.
    check_keys(errors, payload, required=KEYS, optional=set())
    errors.raise_if_any()
    database = _identifier(payload, "database")
    schema = _identifier(payload, "schema")
    if not isinstance(payload.get("sql"), str):
        raise InvalidPayload.field("payload.sql", "enter the SQL to run")
    managed = ManagedSchema.objects.filter(instance=instance, database=database, name=schema, team=team).first()
    if managed is None:
        raise InvalidPayload.field(
            "payload.schema", f"{schema} is not a schema of team {team} in database {database} on {instance}")
    normalised = {"database": database, "schema": schema, "sql": payload["sql"], "owner_role": managed.owner_role}
    statements = checked_statements(normalised)
    review(normalised, instance=instance, statements=statements)  # raises on error findings
    return normalised


def review(payload: dict, *, instance: Any, statements: list[ddl_parse.Statement] | None = None,
           facts: ddl_rules.Facts | None = None) -> dict:
    """Findings, risk and risk reasons of a validated DDL payload on `instance`.

    Table facts come from the cluster (provisioning/ddl/facts.py) unless given. If the cluster
    cannot be reached the size-dependent rules are skipped and an info finding says so.
    Error findings raise InvalidPayload (payload.sql).
    """
    from portal.services.ddl_rules import enabled_rules
    from provisioning.ddl import facts as ddl_facts

    statements = statements if statements is not None else checked_statements(payload)
    extra: list[ddl_rules.Finding] = []
    if facts is None:
        tables = ddl_facts.referenced_tables(statements)
        try:
            facts = ddl_facts.fetch_facts(instance, database=payload["database"], schema=payload["schema"],
                                          tables=tables)
        except Exception as exc:  # noqa: BLE001 - any failure to read facts degrades to "unknown"
            from provisioning.connections import describe_error

            facts = {}
            extra.append(ddl_rules.Finding(
                "ddl.facts_unavailable", ddl_rules.INFO,
                f"table facts could not be read ({describe_error(exc)}): size-dependent rules were not evaluated",
                0, ""))
    findings = ddl_rules.evaluate(statements, facts=facts, enabled=enabled_rules(instance.environment)) + extra
    errors = ddl_rules.errors_of(findings)
    if errors:
        messages = [f"[{f.rule}] {f.message}" for f in errors]
        raise InvalidPayload(messages[0], errors={"payload.sql": messages})
    risk, reasons = ddl_rules.ddl_risk(findings)
    return {"findings": [f.as_dict() for f in findings], "risk": risk, "risk_reasons": reasons}


def findings(payload: dict, *, instance: Any) -> list[dict]:
    """The review-rule findings stored with the request (ChangeRequest.findings)."""
    return review(payload, instance=instance)["findings"]


def dry_run(payload: dict, *, instance: Any, team: Any) -> dict | None:
    """Run the plan as the team's executor login and roll it back on dev / staging instances
    (None elsewhere); see dry_run.py."""
    from provisioning.ddl import dry_run as ddl_dry_run

    if not ddl_dry_run.applies_to(instance):
        return None
    return ddl_dry_run.run(instance, team, payload)


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


def render(payload: dict, *, secrets: dict | None = None) -> list[Step]:
    return [step for _, step in numbered_steps(payload)]


def database(payload: dict) -> str | None:
    return payload["database"]
