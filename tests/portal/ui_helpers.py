"""Rows the UI tests start from: requests in a given state, written as the services leave them."""

from __future__ import annotations

from typing import Any

from portal.models import ChangeRequest, Instance, Team
from provisioning.plans import plan_hash

GRANT_PLAN = ['GRANT USAGE ON SCHEMA "payments" TO "reporting"',
              'GRANT SELECT ON ALL TABLES IN SCHEMA "payments" TO "reporting"']


def given_request(*, requester: Any, instance: Instance, team: Team | None = None, type: str = "grant",
                  status: str = "submitted", risk: str = "low", risk_reasons: list[str] | None = None,
                  payload: dict | None = None, plan: list[str] | None = None, **fields: Any) -> ChangeRequest:
    team = team or requester.teams.first()
    plan = plan if plan is not None else list(GRANT_PLAN)
    payload = payload if payload is not None else {
        "role": "reporting", "database": "app", "schema": "payments", "privileges": ["SELECT"],
        "tables": "all", "default_privileges": False}
    return ChangeRequest.objects.create(
        type=type, instance=instance, team=team, requester=requester, justification="for the monthly report",
        payload=payload, plan=plan, plan_hash=plan_hash(plan), risk=risk, risk_reasons=risk_reasons or [],
        status=status, **fields)


def prod_instance(name: str = "payments-prod") -> Instance:
    """A prod instance row (never dialled by these tests: pages only read it)."""
    return Instance.objects.create(name=name, environment="prod", host="127.0.0.1", port=1, admin_user="x")


def dev_instance(name: str = "dev-one") -> Instance:
    return Instance.objects.create(name=name, environment="dev", host="127.0.0.1", port=1, admin_user="x")
