"""The `schema` request: a schema owned by a NOLOGIN group role of the team.

Objects never belong to a person's login role (they would block a later DROP ROLE); the owner
role (default `<schema>_owner`) is created by the plan when it does not exist yet.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from provisioning.admin_login import join_owner_step
from provisioning.plans import Step, ident
from provisioning.plans.checks import (
    MAX_NAME_BYTES,
    Errors,
    check_database,
    check_name,
    name_problem,
    schemas_of,
    validation_start,
)

REQUIRED = {"database", "name"}
OPTIONAL = {"owner_role"}
OWNER_SUFFIX = "_owner"


def default_owner(name: str) -> str:
    return f"{name}{OWNER_SUFFIX}"


def validate(payload: dict, *, instance: Any, team: Any, user: Any) -> dict:
    from portal.models import ManagedRole, ManagedSchema

    errors, snapshot = validation_start(payload, instance=instance, required=REQUIRED, optional=OPTIONAL)
    database = check_database(errors, payload, snapshot)
    name = check_name(errors, payload, "name")
    if name and database:
        exists = name in schemas_of(snapshot, database) or ManagedSchema.objects.filter(
            instance=instance, database=database, name=name).exists()
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
    if owner is not None:
        problem = name_problem(owner, role=True)
        if problem:
            errors.add(owner_field, f"owner role: {problem}" if owner_field == "name" else problem)
        else:
            _check_owner(errors, owner, owner_field, instance=instance, team=team, snapshot=snapshot,
                         managed_roles=ManagedRole.objects)
    errors.raise_if_any()
    return {"database": database, "name": name, "owner_role": owner}


def _check_owner(errors: Errors, owner: str, field: str, *, instance, team, snapshot, managed_roles) -> None:
    """The owner is new (the plan creates it) or an existing NOLOGIN group role of this team."""
    managed = managed_roles.filter(instance=instance, name=owner, dropped_at__isnull=True).first()
    live = (snapshot or {}).get("roles", {}).get(owner)
    if managed is None and live is None:
        return
    if managed is None or managed.team_id != getattr(team, "pk", None):
        errors.add(field, f"role {owner!r} exists and is not a group role of team {team}")
    elif managed.login or (live or {}).get("login"):
        errors.add(field, f"role {owner!r} is a login role; a schema is owned by a NOLOGIN group role")


def render(payload: dict, *, secrets: dict | None = None) -> list[Step]:
    owner = payload["owner_role"]
    # Idempotent: the owner may already exist (an earlier schema of the team, a retry).
    create_owner = sql.SQL(
        "BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {owner_name}) "
        "THEN CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; "
        "END IF; END"
    ).format(owner_name=sql.Literal(owner), owner=ident(owner, role=True))
    # Quoting does not protect inside a dollar-quoted body: a "$$" in the name would end the DO
    # block early and let the rest run as SQL of its own (found by the plan property tests).
    if "$$" in create_owner.as_string(None):
        raise ValueError(f"{owner!r} cannot be placed inside a dollar-quoted block")
    return [
        Step(sql.SQL("DO $${body}$$").format(body=create_owner)),
        # A non-superuser admin login must be able to act as the owner (admin_login.py).
        join_owner_step(owner),
        Step(sql.SQL("CREATE SCHEMA {schema} AUTHORIZATION {owner}").format(
            schema=ident(payload["name"]), owner=ident(owner, role=True))),
    ]


def database(payload: dict) -> str | None:
    return payload["database"]
