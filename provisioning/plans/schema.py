"""The `schema` request: a schema owned by a NOLOGIN group role of the team.

Objects never belong to a person's login role (they would block a later DROP ROLE); the owner
role (default `<schema>_owner`) is created by the plan when it does not exist yet, or is an existing
NOLOGIN group role of the requesting team. Validation decides which and keeps it in the payload
(`create_owner_role`), so the reviewer reads either CREATE ROLE or "the owner role exists", and
the plan asserts that choice inside the target transaction: a role made meanwhile by someone else
(another team's request, a DBA) stops the plan instead of silently becoming the schema's owner.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from provisioning.plans import Step, assertion, ident, role_absent
from provisioning.plans.checks import (
    MAX_NAME_BYTES,
    Errors,
    check_database,
    check_name,
    name_problem,
    rendered_name,
    schemas_of,
    validation_start,
)
from provisioning.plans.context import Lookups, PlanContext, names_in

# preconditions: the engine calls it before each attempt (see PlanModule in provisioning/plans).
HOOKS = frozenset({"preconditions", "lookups"})

REQUIRED = {"database", "name"}
# create_owner_role: derived by validate (True: the plan creates the owner role); accepted back
# only when it matches, like a grant's schema_owner.
OPTIONAL = {"owner_role", "create_owner_role"}
OWNER_SUFFIX = "_owner"


def default_owner(name: str) -> str:
    return f"{name}{OWNER_SUFFIX}"


def validate(payload: dict, ctx: PlanContext) -> dict:
    errors, snapshot = validation_start(payload, ctx, required=REQUIRED, optional=OPTIONAL)
    database = check_database(errors, payload, snapshot)
    name = check_name(errors, payload, "name")
    if name and database:
        exists = name in schemas_of(snapshot, database) or ctx.schema(database, name) is not None
        if exists:
            errors.add("name", f"schema {name!r} already exists in database {database!r}")

    owner = payload.get("owner_role")
    if owner is None and name:
        owner = default_owner(name)
        if len(owner.encode()) > MAX_NAME_BYTES:
            errors.add("name", f"too long to derive the owner role {owner!r}: give owner_role")
            owner = None
        owner_field = "name"
    else:
        owner_field = "owner_role"
    create_owner = True
    if owner is not None:
        problem = name_problem(owner, role=True)
        if problem:
            errors.add(owner_field, f"owner role: {problem}" if owner_field == "name" else problem)
        else:
            create_owner = _check_owner(errors, owner, owner_field, ctx=ctx, snapshot=snapshot)
    given = payload.get("create_owner_role")
    if given is not None and given != create_owner:
        errors.add("create_owner_role", "is derived from the owner role (whether it exists yet); leave it out")
    errors.raise_if_any()
    return {"database": database, "name": name, "owner_role": owner, "create_owner_role": create_owner}


def lookups(payload: Any) -> Lookups:
    """The names validate() looks up in the context: the database, the schema and its owner role
    (given, or derived from the schema's name)."""
    if not isinstance(payload, dict):
        return Lookups()
    name, owner = payload.get("name"), payload.get("owner_role")
    if owner is None and isinstance(name, str):
        owner = default_owner(name)
    return Lookups(databases=names_in(payload.get("database")), roles=names_in(owner),
                   schemas=names_in(payload.get("name")))


def _check_owner(errors: Errors, owner: str, field: str, *, ctx: PlanContext, snapshot: dict | None) -> bool:
    """The owner is new (the plan creates it: True) or an existing NOLOGIN group role of this team
    (False). Another team's role never owns this team's schema: its objects would be theirs."""
    managed = ctx.role(owner)
    live = (snapshot or {}).get("roles", {}).get(owner)
    if managed is None and live is None:
        return True
    if managed is None or managed.team_id != ctx.team_id:
        errors.add(field, f"role {owner!r} exists and is not a group role of team {ctx.team}")
    elif managed.login or (live or {}).get("login"):
        errors.add(field, f"role {owner!r} is a login role; a schema is owned by a NOLOGIN group role")
    return False


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    # The naming rule first (one rule for the API, the forms and the plans), then ident(), which
    # refuses what the server would not keep as written, before any Literal of the names.
    owner, name = rendered_name(payload["owner_role"], role=True), rendered_name(payload["name"])
    owner_ident, schema_ident = ident(owner, role=True), ident(name)
    steps = [assertion(sql.SQL("NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = {})").format(
        sql.Literal(name)), "the schema does not exist yet")]
    # A payload stored before create_owner_role existed renders as "create": its text then differs
    # from the approved plan, and the executor refuses it as stale rather than guessing.
    if payload.get("create_owner_role", True):
        steps += [
            role_absent(owner),
            Step(sql.SQL("CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                         "NOBYPASSRLS").format(owner=owner_ident)),
        ]
    else:
        steps.append(assertion(sql.SQL(
            "EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {} AND NOT rolcanlogin AND NOT rolsuper)"
        ).format(sql.Literal(owner)), "the owner role exists and is a group role that cannot log in"))
    # A non-superuser admin login must be able to act as the owner (admin_login.py).
    steps.append(join_owner_step(owner))
    steps.append(Step(sql.SQL("CREATE SCHEMA {schema} AUTHORIZATION {owner}").format(
        schema=schema_ident, owner=owner_ident)))
    return steps


def preconditions(request: Any) -> str | None:
    """The portal's side of the plan's assumptions, checked by the executor before each attempt (the
    cluster cannot know teams): an owner role the plan reuses is still a group role of the requesting
    team, and one it creates is not recorded as anyone's. None when they hold, else what changed.

    The one plan hook that does I/O (a read of the portal's records): it runs in the engine, on the
    worker, right before the target transaction, where no PlanContext built at submit would be fresh.
    """
    # Inside the function: plans sit below the models' app loading (the engine calls this at apply).
    from portal.models import ManagedRole

    owner = request.payload["owner_role"]
    managed = ManagedRole.objects.filter(instance_id=request.instance_id, name=owner, dropped_at__isnull=True).first()
    if request.payload.get("create_owner_role", True):
        if managed is not None and managed.request_id != request.pk:
            return f"the owner role {owner!r} was created meanwhile (by request #{managed.request_id}); submit again"
        return None
    if managed is None or managed.team_id != request.team_id:
        return f"the owner role {owner!r} is no longer a group role of team {request.team}"
    return None


def database(payload: dict) -> str | None:
    return payload["database"]


def join_owner_step(owner: str) -> Step:
    """The plan step that lets a non-superuser admin act as `owner` (SET ROLE and its privileges):
    `GRANT <owner> TO CURRENT_USER`, skipped for a superuser, who needs nothing and whose
    memberships stay as they were. Idempotent: granting it again is only a NOTICE."""
    body = sql.SQL(
        "BEGIN IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) "
        "THEN GRANT {owner} TO CURRENT_USER; END IF; END"
    ).format(owner=ident(owner, role=True))
    # Quoting does not protect inside a dollar-quoted body: "$$" in a name would end the block.
    if "$$" in body.as_string(None):
        raise ValueError(f"{owner!r} cannot be placed inside a dollar-quoted block")
    return Step(sql.SQL("DO $${body}$$").format(body=body))
