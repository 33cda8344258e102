"""Plan of a `replica` request: payload {name} → the build steps the reviewer reads.

Nothing here runs as SQL: the executor hands approved replica requests to
provisioning.replicas.runner.apply(), which performs these steps through the instance kind's
driver. The lines are still built only from sql.Identifier / sql.Literal so that a name can
never smuggle text into what the reviewer sees.
"""

from __future__ import annotations

from portal.errors import InvalidPayload
from provisioning.plans import Step
from provisioning.plans.checks import name_problem
from provisioning.plans.context import PlanContext
from provisioning.replicas.base import driver_for_kind, supported_kinds

HOOKS: frozenset[str] = frozenset()

ALLOWED_KEYS = {"name"}


def validate(payload: dict, ctx: PlanContext) -> dict:
    """The primary is ctx.instance; ctx.instance_names holds every instance's name (the new one's
    must be free)."""
    if not isinstance(payload, dict):
        raise InvalidPayload.field("payload", "must be an object with a name")
    unknown = sorted(set(payload) - ALLOWED_KEYS)
    if unknown:
        raise InvalidPayload.field(f"payload.{unknown[0]}", "unknown field; a replica request takes only name")
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidPayload.field("payload.name", "required: the new replica's instance name")
    problem = name_problem(name)  # the same naming rule as schemas and roles
    if problem:
        raise InvalidPayload.field("payload.name", problem)
    instance = ctx.instance
    if instance.replica_of is not None:
        raise InvalidPayload.field("instance", f"{instance.name} is itself a replica; replicate its primary")
    if driver_for_kind(instance.kind) is None:
        raise InvalidPayload.field(
            "instance", f"replicas can be made of {', '.join(supported_kinds())} instances only; "
                        f"{instance.name} is {instance.kind}")
    if instance.status == "retired":
        raise InvalidPayload.field("instance", f"{instance.name} is retired")
    if name in ctx.instance_names:
        raise InvalidPayload.field("payload.name", "an instance with this name exists")
    return {"name": name}


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    # Only local primaries pass validate(); the local driver's steps are the plan.
    driver = driver_for_kind("local")
    assert driver is not None
    return [Step(statement=line, transactional=False) for _key, line in driver.describe(name=payload["name"])]


def database(payload: dict) -> str | None:
    return None
