"""The `disable` request: a login role the portal created can no longer sign in (offboarding).

`ALTER ROLE … NOLOGIN`, not `DROP ROLE`: a role that owns objects or holds privileges cannot be
dropped without reassigning them, and NOLOGIN stops every new session at once while keeping the
role's history (its grants are revoked by their own revoke requests). The engine then ends the
role's open sessions in every database (provisioning/sessions.py `end_login_sessions`).

Only the portal files these requests (persona `system`, when it offboards the user who asked for
the role); a person cannot submit one through the API.
"""

from __future__ import annotations

from psycopg import sql

from provisioning.plans import Step, assertion, ident
from provisioning.plans.checks import check_name, rendered_name, validation_start
from provisioning.plans.context import SYSTEM, PlanContext

HOOKS: frozenset[str] = frozenset()

REQUIRED = {"role"}
OPTIONAL: set[str] = set()


def validate(payload: dict, ctx: PlanContext) -> dict:
    errors, _snapshot = validation_start(payload, ctx, required=REQUIRED, optional=OPTIONAL)
    if ctx.persona != SYSTEM:
        errors.add("role", "login roles are disabled by the portal when it offboards a user, not by request")
        errors.raise_if_any()
    name = check_name(errors, payload, "role", role=True)
    if name:
        role = ctx.role(name)
        if role is None or not role.login:
            errors.add("role", f"{name!r} is not a live login role the portal manages on this instance")
    errors.raise_if_any()
    return {"role": name}


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    name = rendered_name(payload["role"], role=True)
    # The role must still be an ordinary one: never touch a superuser someone made of it by hand.
    exists = assertion(sql.SQL("EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {} AND NOT rolsuper)").format(
        sql.Literal(name)), "the role exists and is not a superuser")
    return [exists, Step(sql.SQL("ALTER ROLE {name} NOLOGIN").format(name=ident(name, role=True)))]


def database(payload: dict) -> str | None:
    return None
