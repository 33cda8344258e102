"""The `terminate` request: end one session (a blocking one, seen on the monitoring page; #21).

Payload `{pid, role}`: the backend's process id and the role it runs as, both from a monitoring
sample. Reviewed like any request (the approval policy for `terminate`; without a row for it,
the default policy's; no risk rule: rated medium). Who may ask: a team for a session of one of its
own roles (the portal's records); a reviewer or admin for any role. The plan runs in the
maintenance database, as the admin login (a member of pg_signal_backend: it can end any session
but a superuser's):

    SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
     WHERE pid = <pid> AND usename = <role>

The role is checked with the pid at apply time, so a pid reused by another role's session since
the sample is left alone; a session that has already ended makes the plan a no-op.
"""

from __future__ import annotations

from psycopg import sql

from portal.errors import InvalidPayload
from provisioning.naming import name_problem
from provisioning.plans import Step
from provisioning.plans.context import REVIEWER, PlanContext

HOOKS: frozenset[str] = frozenset()
MAX_PID = 2**31 - 1


def validate(payload: dict, ctx: PlanContext | None = None) -> dict:
    if not isinstance(payload, dict) or set(payload) != {"pid", "role"}:
        raise InvalidPayload.field("payload", "exactly {pid, role}: the session to end and its role")
    pid = payload["pid"]
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= MAX_PID:
        raise InvalidPayload.field("payload.pid", f"a process id from 1 to {MAX_PID}")
    role = payload["role"]
    problem = name_problem(role, role=True) if isinstance(role, str) else "a role name"
    if problem:
        raise InvalidPayload.field("payload.role", problem)
    if ctx is not None and ctx.persona != REVIEWER:
        managed = ctx.role(role)
        if managed is None or managed.team_id != ctx.team_id:
            raise InvalidPayload.field("payload.role", f"not a role of {ctx.team}: only its own sessions may be ended "
                                                       "on its request (a reviewer may end any)")
    return {"pid": pid, "role": role}


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    return [Step(sql.SQL(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE pid = {pid} AND usename = {role}").format(pid=sql.Literal(int(payload["pid"])),
                                                          role=sql.Literal(payload["role"])))]


def database(payload: dict) -> str | None:
    return None
