"""Reads of the admin pages: teams with their members, the policy matrix."""

from __future__ import annotations

from django.db.models import Count, Prefetch

from portal.choices import Environment, RequestType, Risk
from portal.models import ApprovalPolicy, Membership, Team


def team_list_with_members():
    members = Prefetch("memberships", queryset=Membership.objects.select_related("user").order_by("user__username"))
    return Team.objects.annotate(request_count=Count("requests", distinct=True)).prefetch_related(members).order_by("name")


def policy_matrix() -> dict:
    """{"environments", "risks", "rows": [(type label, [[policy per risk] per environment])]}."""
    policies = {(p.environment, p.request_type, p.risk): p for p in ApprovalPolicy.objects.all()}
    rows = []
    for request_type, label in RequestType.choices:
        cells = [[policies.get((env, request_type, risk)) for risk in Risk.values] for env in Environment.values]
        rows.append((request_type, label, cells))
    return {"environments": Environment.choices, "risks": Risk.values, "rows": rows}
