"""The `grant` request: privileges on a schema, its tables and its future tables (see access.py)."""

from __future__ import annotations

from typing import Any

from provisioning.plans import Step, access


def validate(payload: dict, *, instance: Any, team: Any, user: Any) -> dict:
    return access.validate(payload, instance=instance, team=team, kind="grant")


def render(payload: dict, *, secrets: dict | None = None) -> list[Step]:
    return access.render_grant(payload)


def database(payload: dict) -> str | None:
    return payload["database"]
