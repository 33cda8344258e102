"""Reads of the admin pages: teams with their members, the policy matrix."""

from __future__ import annotations

from django.db.models import OuterRef, Prefetch, Subquery
from django.db.models.functions import Coalesce

from portal.choices import Environment, RequestType, Risk
from portal.models import ApprovalPolicy, Membership, Team, TeamRequestCount


def team_list_with_members():
    members = Prefetch("memberships", queryset=Membership.objects.select_related("user").order_by("user__username"))
    # Each team's count is one row kept by triggers (TeamRequestCount, #23): counting a team's
    # requests read all of them (from the (team, -id) index) on every admin home page.
    requests = TeamRequestCount.objects.filter(team=OuterRef("pk")).values("n")
    return (Team.objects.annotate(request_count=Coalesce(Subquery(requests), 0))
            .prefetch_related(members).order_by("name"))


def policy_matrix() -> dict:
    """{"environments", "risks", "rows": [(type label, [[policy per risk] per environment])]}."""
    policies = {(p.environment, p.request_type, p.risk): p for p in ApprovalPolicy.objects.all()}
    rows = []
    for request_type, label in RequestType.choices:
        cells = [[policies.get((env, request_type, risk)) for risk in Risk.values] for env in Environment.values]
        rows.append((request_type, label, cells))
    return {"environments": Environment.choices, "risks": Risk.values, "rows": rows}
