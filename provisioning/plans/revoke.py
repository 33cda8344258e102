"""The `revoke` request: the grant's shape, taken back. Ending live sessions is the executor's job."""

from __future__ import annotations

from provisioning.plans import Step, access
from provisioning.plans.context import PlanContext

HOOKS = frozenset({"lookups"})


def validate(payload: dict, ctx: PlanContext) -> dict:
    return access.validate(payload, ctx, kind="revoke")


lookups = access.lookups


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    return access.render_revoke(payload)


def database(payload: dict) -> str | None:
    return payload["database"]
