"""The `revoke` request: the grant's shape, taken back. Ending live sessions is the executor's job."""

from __future__ import annotations

from typing import Any

from provisioning.plans import Step, access


def validate(payload: dict, *, instance: Any, team: Any, user: Any) -> dict:
    return access.validate(payload, instance=instance, team=team, kind="revoke", user=user)


def render(payload: dict, *, secrets: dict | None = None) -> list[Step]:
    return access.render_revoke(payload)


def database(payload: dict) -> str | None:
    return payload["database"]
