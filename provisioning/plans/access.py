"""What `grant` and `revoke` share: one payload shape, its checks, and the statements.

Payload: {role, database, schema, privileges: [..], tables: "all" | [..], default_privileges,
expires_at?}. Schema privileges (USAGE, CREATE) go ON SCHEMA; table privileges ON ALL TABLES
IN SCHEMA or on the listed tables; default privileges are set FOR ROLE <schema owner> (the role
that creates the tables), so future tables are covered too. USAGE on the schema is implied by
any table privilege on a grant (a table privilege without it is useless).

The validated payload carries `schema_owner` (derived from the portal's records in the
PlanContext) because the plan is rendered without database access; when given back, it must match.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from portal.choices import PRIVILEGES, SCHEMA_PRIVILEGES, TABLE_PRIVILEGES
from provisioning.plans import Step, ident
from provisioning.plans.checks import (
    MAX_NAME_BYTES,
    Errors,
    check_bool,
    check_database,
    check_future_datetime,
    check_name,
    schemas_of,
    validation_start,
)
from provisioning.plans.context import REQUESTER, Lookups, PlanContext, names_in

REQUIRED = {"role", "database", "schema", "privileges"}
OPTIONAL = {"tables", "default_privileges", "expires_at", "schema_owner"}
ALL_TABLES = "all"
MAX_TABLES = 500


def validate(payload: dict, ctx: PlanContext, *, kind: str) -> dict:
    """kind: "grant" or "revoke". A system request (expiry, drift) and a reviewer may revoke anything."""
    errors, snapshot = validation_start(payload, ctx, required=REQUIRED, optional=OPTIONAL)
    live_roles = (snapshot or {}).get("roles", {})
    database = check_database(errors, payload, snapshot)
    team = ctx.team

    role = check_name(errors, payload, "role", role=True)
    if role:
        managed_role = ctx.role(role)
        if kind == "grant":
            # Access is granted to the requesting team's own roles only.
            if managed_role is None or managed_role.team_id != ctx.team_id:
                errors.add("role", f"no role {role!r} of team {team} on this instance")
            elif snapshot is not None and role not in live_roles:
                errors.add("role", f"role {role!r} does not exist on the instance")
        elif role not in live_roles and managed_role is None:
            errors.add("role", f"role {role!r} does not exist on the instance")

    schema = check_name(errors, payload, "schema")
    owner = None
    live_schemas = schemas_of(snapshot, database)
    if schema and database:
        managed = ctx.schema(database, schema)
        if managed is not None:
            owner = managed.owner_role
        elif kind == "revoke" and schema in live_schemas:
            owner = live_schemas[schema].get("owner")
        elif kind == "grant":
            errors.add("schema", f"the portal manages no schema {schema!r} in database {database!r}")
        else:
            errors.add("schema", f"no schema {schema!r} in database {database!r}")
        if owner and snapshot is not None and schema not in live_schemas:
            errors.add("schema", f"schema {schema!r} does not exist in database {database!r} (yet)")
    if kind == "revoke" and role and schema and ctx.persona == REQUESTER:
        # A developer takes back access their team holds or gives, not other teams' grants.
        # (A dropped role the team once had still counts as the team's: it may hold leftovers.)
        our_role = ctx.role(role, include_dropped=True)
        our_schema = ctx.schema(database, schema) if database else None
        role_is_ours = our_role is not None and our_role.team_id == ctx.team_id
        schema_is_ours = our_schema is not None and our_schema.team_id == ctx.team_id
        if not role_is_ours and not schema_is_ours:
            errors.add("role", f"neither role {role!r} nor schema {schema!r} belongs to team {team}")
    if "schema_owner" in payload and owner and payload["schema_owner"] != owner:
        errors.add("schema_owner", f"is derived from the schema (its owner is {owner!r}); leave it out")

    privileges = _privileges(errors, payload.get("privileges"))
    table_privileges = [p for p in privileges if p in TABLE_PRIVILEGES]
    tables = _tables(errors, payload, table_privileges, live_schemas.get(schema or "", {}), schema)

    default_privileges = check_bool(errors, payload, "default_privileges")
    if default_privileges and privileges and not table_privileges:
        errors.add("default_privileges", "default privileges need a table privilege (SELECT, INSERT, ...)")
    elif default_privileges and isinstance(tables, list):
        errors.add("default_privileges", 'default privileges cover future tables of the schema: use tables "all"')

    expires_at = None
    if kind == "grant":
        expires_at = check_future_datetime(errors, payload, "expires_at")
    elif payload.get("expires_at") is not None:
        errors.add("expires_at", "a revoke does not expire")
    errors.raise_if_any()
    return {
        "role": role, "database": database, "schema": schema, "privileges": privileges, "tables": tables,
        "default_privileges": default_privileges, "expires_at": expires_at, "schema_owner": owner,
    }


def lookups(payload: Any) -> Lookups:
    """The names validate() looks up in the context: the role, the database and the schema."""
    if not isinstance(payload, dict):
        return Lookups()
    return Lookups(databases=names_in(payload.get("database")), roles=names_in(payload.get("role")),
                   schemas=names_in(payload.get("schema")))


def _privileges(errors: Errors, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        errors.add("privileges", f"a non-empty list of: {', '.join(PRIVILEGES)}")
        return []
    chosen = set()
    for item in value:
        privilege = item.upper() if isinstance(item, str) else item
        if privilege not in PRIVILEGES:
            errors.add("privileges", f"{item!r} is not one of: {', '.join(PRIVILEGES)}")
        else:
            chosen.add(privilege)
    return [p for p in PRIVILEGES if p in chosen]  # allow-list order: stable plan text


def _tables(errors: Errors, payload: dict, table_privileges: list[str], live_schema: dict,
            schema: str | None) -> str | list[str] | None:
    value = payload.get("tables")
    if not table_privileges:
        if value not in (None, [], ""):
            errors.add("tables", "tables only go with table privileges (SELECT, INSERT, UPDATE, ...)")
        return None
    if value is None or value == ALL_TABLES:
        return ALL_TABLES
    if not isinstance(value, list) or not value or len(value) > MAX_TABLES:
        errors.add("tables", f'"all" or a non-empty list of at most {MAX_TABLES} table names')
        return None
    known = set(live_schema.get("tables", []))
    tables: list[str] = []
    for table in value:
        if not isinstance(table, str) or not table or len(table.encode()) > MAX_NAME_BYTES:
            errors.add("tables", f"{table!r} is not a table name")
        elif table not in known:
            errors.add("tables", f"no table {table!r} in schema {schema!r}")
        elif table not in tables:
            tables.append(table)
    return sorted(tables)


def _privilege_list(privileges: list[str]) -> sql.Composable:
    # Keywords only from the allow-list (checked again here: render may get a stored payload).
    if any(p not in PRIVILEGES for p in privileges):
        raise ValueError("privilege outside the allow-list")
    return sql.SQL(", ").join(sql.SQL(p) for p in privileges)


def _table_target(payload: dict) -> sql.Composable:
    schema = payload["schema"]
    if payload["tables"] == ALL_TABLES:
        return sql.SQL("ALL TABLES IN SCHEMA {schema}").format(schema=ident(schema))
    return sql.SQL("TABLE {tables}").format(
        tables=sql.SQL(", ").join(ident(schema, t) for t in payload["tables"]))


def split(payload: dict) -> tuple[list[str], list[str]]:
    privileges = payload["privileges"]
    if any(p not in PRIVILEGES for p in privileges):
        raise ValueError("privilege outside the allow-list")
    return [p for p in privileges if p in SCHEMA_PRIVILEGES], [p for p in privileges if p in TABLE_PRIVILEGES]


def render_grant(payload: dict) -> list[Step]:
    schema_privileges, table_privileges = split(payload)
    if table_privileges and "USAGE" not in schema_privileges:
        schema_privileges = ["USAGE", *schema_privileges]
    role, schema = ident(payload["role"], role=True), ident(payload["schema"])
    steps = []
    if schema_privileges:
        steps.append(Step(sql.SQL("GRANT {privs} ON SCHEMA {schema} TO {role}").format(
            privs=_privilege_list(schema_privileges), schema=schema, role=role)))
    if table_privileges:
        steps.append(Step(sql.SQL("GRANT {privs} ON {target} TO {role}").format(
            privs=_privilege_list(table_privileges), target=_table_target(payload), role=role)))
    if payload.get("default_privileges"):
        steps.append(Step(sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT {privs} ON TABLES TO {role}"
        ).format(owner=ident(payload["schema_owner"], role=True), schema=schema,
                 privs=_privilege_list(table_privileges), role=role)))
    return steps


def render_revoke(payload: dict) -> list[Step]:
    """The reverse order of a grant: future tables, then tables, then the schema."""
    schema_privileges, table_privileges = split(payload)
    role, schema = ident(payload["role"], role=True), ident(payload["schema"])
    steps = []
    if payload.get("default_privileges"):
        steps.append(Step(sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} REVOKE {privs} ON TABLES FROM {role}"
        ).format(owner=ident(payload["schema_owner"], role=True), schema=schema,
                 privs=_privilege_list(table_privileges), role=role)))
    if table_privileges:
        steps.append(Step(sql.SQL("REVOKE {privs} ON {target} FROM {role}").format(
            privs=_privilege_list(table_privileges), target=_table_target(payload), role=role)))
    if schema_privileges:
        steps.append(Step(sql.SQL("REVOKE {privs} ON SCHEMA {schema} FROM {role}").format(
            privs=_privilege_list(schema_privileges), schema=schema, role=role)))
    return steps
