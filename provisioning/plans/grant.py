"""The `grant` request: privileges on a schema, its tables and its future tables (see access.py)."""

from __future__ import annotations

from provisioning.plans import Step, access
from provisioning.plans.context import PlanContext

HOOKS = frozenset({"lookups"})


def validate(payload: dict, ctx: PlanContext) -> dict:
    return access.validate(payload, ctx, kind="grant")


lookups = access.lookups


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    return access.render_grant(payload)


def database(payload: dict) -> str | None:
    return payload["database"]
