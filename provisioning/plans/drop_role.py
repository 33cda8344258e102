"""The `drop_role` request: remove a role the portal made that is left with nothing.

Filed by the portal only (provisioning/verification.py), after a verified revoke leaves a managed
role without grants, memberships or owned objects; reviewed like any request (the approval
policy for `drop_role`). The plan first asserts, inside the target transaction, that the role
still holds nothing anywhere on the cluster (pg_shdepend lists what it owns and every ACL that
names it, in every database; pg_auth_members its memberships): a grant made since the proposal
stops the plan instead of being dropped with it. Then, in the maintenance database:

    GRANT <role> TO CURRENT_USER          -- a non-superuser admin needs the role's privileges
    REASSIGN OWNED BY <role> TO CURRENT_USER
    DROP OWNED BY <role>
    DROP ROLE <role>

(REASSIGN / DROP OWNED act on the current database and shared objects; the assertion guarantees
there is nothing elsewhere, so they are the belt to the assertion's braces.)
"""

from __future__ import annotations

from psycopg import sql

from portal.errors import InvalidPayload
from provisioning.naming import name_problem
from provisioning.plans import Step, assertion, ident
from provisioning.plans.context import PlanContext

HOOKS: frozenset[str] = frozenset()


def validate(payload: dict, ctx: PlanContext | None = None) -> dict:
    if not isinstance(payload, dict) or set(payload) != {"name"}:
        raise InvalidPayload.field("payload", "exactly {name}: the role to remove")
    problem = name_problem(payload["name"], role=True)
    if problem:
        raise InvalidPayload.field("payload.name", problem)
    return {"name": payload["name"]}


def holds_nothing(role: str) -> sql.Composed:
    """True when `role` exists and nothing on the cluster depends on it or names it, and it is a
    member of no role (the admin's own ADMIN membership of a role it created aside)."""
    literal = sql.Literal(role)
    return sql.SQL(
        "EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {role} AND NOT rolsuper)"
        " AND NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend d WHERE d.refclassid = 'pg_catalog.pg_authid'::regclass"
        " AND d.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {role}))"
        " AND NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m"
        " WHERE m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {role}))"
        " AND NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m"
        " WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {role})"
        " AND m.member <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER))"
    ).format(role=literal)


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    role = ident(payload["name"], role=True)
    return [
        assertion(holds_nothing(payload["name"]), "the role still holds, owns and belongs to nothing"),
        Step(sql.SQL("GRANT {role} TO CURRENT_USER").format(role=role)),
        Step(sql.SQL("REASSIGN OWNED BY {role} TO CURRENT_USER").format(role=role)),
        Step(sql.SQL("DROP OWNED BY {role}").format(role=role)),
        Step(sql.SQL("DROP ROLE {role}").format(role=role)),
    ]


def database(payload: dict) -> str | None:
    return None
