"""The `role` request: CREATE ROLE, LOGIN (password generated at apply time) or NOLOGIN.

Never SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS: the plan says NO… for each,
so the reviewer reads it and a changed default on the server cannot widen the role.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from provisioning.plans import PASSWORD_PLACEHOLDER, Step, ident, role_absent
from provisioning.plans.checks import (
    check_bool,
    check_future_datetime,
    check_name,
    name_problem,
    rendered_name,
    validation_start,
)
from provisioning.plans.context import Lookups, PlanContext, names_in

HOOKS = frozenset({"lookups"})

REQUIRED = {"name", "login"}
OPTIONAL = {"member_of", "connection_limit", "valid_until"}
MAX_CONNECTION_LIMIT = 10000
MAX_MEMBER_OF = 20
DENIED_ATTRIBUTES = sql.SQL("NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")


def validate(payload: dict, ctx: PlanContext) -> dict:
    errors, snapshot = validation_start(payload, ctx, required=REQUIRED, optional=OPTIONAL)
    live_roles = (snapshot or {}).get("roles", {})
    name = check_name(errors, payload, "name", role=True)
    # A dropped role's name stays taken: the portal's record of it (and its history) keeps the name.
    if name and (name in live_roles or ctx.role(name, include_dropped=True) is not None):
        errors.add("name", f"role {name!r} already exists on this instance")
    login = check_bool(errors, payload, "login")

    member_of = payload.get("member_of", [])
    groups: list[str] = []
    if not isinstance(member_of, list) or len(member_of) > MAX_MEMBER_OF:
        errors.add("member_of", f"must be a list of at most {MAX_MEMBER_OF} group role names")
    else:
        team = ctx.team
        for group in member_of:
            problem = name_problem(group, role=True)
            if problem:
                errors.add("member_of", f"{group!r}: {problem}")
            elif not _team_group_role(ctx, group) or live_roles.get(group, {}).get("login"):
                errors.add("member_of", f"{group!r} is not a group role the portal manages for team {team}")
            elif group == name:
                errors.add("member_of", "a role cannot be a member of itself")
            elif group not in groups:
                groups.append(group)

    limit = payload.get("connection_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not -1 <= limit <= MAX_CONNECTION_LIMIT):
        errors.add("connection_limit", f"must be an integer from -1 (no limit) to {MAX_CONNECTION_LIMIT}")
        limit = None
    valid_until = check_future_datetime(errors, payload, "valid_until")
    errors.raise_if_any()
    return {"name": name, "login": login, "member_of": sorted(groups), "connection_limit": limit,
            "valid_until": valid_until}


def _team_group_role(ctx: PlanContext, name: str) -> bool:
    """Whether `name` is one of the requesting team's live NOLOGIN group roles (the portal's
    records; looked up by name, so a context holding only the names the payload gives will do)."""
    role = ctx.role(name)
    return role is not None and role.team_id == ctx.team_id and not role.login


def lookups(payload: Any) -> Lookups:
    """The names validate() looks up in the context: the new role and the groups it joins."""
    if not isinstance(payload, dict):
        return Lookups()
    groups = payload.get("member_of")
    return Lookups(roles=names_in(payload.get("name"), *(groups if isinstance(groups, list) else [])))


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    # The naming rule (the one the API and forms apply) holds for what the plan creates and joins.
    name = rendered_name(payload["name"], role=True)
    for group in payload.get("member_of") or []:
        rendered_name(group, role=True)
    parts: list[sql.Composable] = [
        sql.SQL("CREATE ROLE {name} WITH").format(name=ident(name, role=True)),
    ]
    login = bool(payload.get("login"))
    if login:
        # The verifier is computed by the worker (SCRAM, client side); the plan shows a placeholder.
        password = sql.Literal(secrets["password"]) if secrets else PASSWORD_PLACEHOLDER
        parts.append(sql.SQL("LOGIN PASSWORD {password}").format(password=password))
    else:
        parts.append(sql.SQL("NOLOGIN"))
    parts.append(DENIED_ATTRIBUTES)
    if payload.get("connection_limit") is not None:
        limit = int(payload["connection_limit"])
        # psycopg renders a negative Literal as " -1"; -1 ("no limit") is the one negative allowed.
        parts.append(sql.SQL("CONNECTION LIMIT {limit}").format(
            limit=sql.SQL("-1") if limit < 0 else sql.Literal(limit)))
    if payload.get("valid_until"):
        parts.append(sql.SQL("VALID UNTIL {until}").format(until=sql.Literal(payload["valid_until"])))
    if payload.get("member_of"):
        parts.append(sql.SQL("IN ROLE {groups}").format(
            groups=sql.SQL(", ").join(ident(g, role=True) for g in payload["member_of"])))
    # The assertion first: a role of the same name made since the review (outside the portal) stops
    # the plan with a clear message instead of a bare "already exists" halfway through a batch.
    return [role_absent(payload["name"]), Step(sql.SQL(" ").join(parts), secret=login)]


def database(payload: dict) -> str | None:
    return None
