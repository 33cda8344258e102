"""Reads of the admin pages: teams with their members, the policy matrix."""

from __future__ import annotations

from django.db.models import BigIntegerField, OuterRef, Prefetch, Subquery, Sum
from django.db.models.functions import Cast, Coalesce

from portal.choices import Environment, RequestType, Risk
from portal.models import ApprovalPolicy, Membership, RequestCountDelta, Team, TeamRequestCount
from portal.selectors.dashboard import fold_request_counts


def team_list_with_members():
    members = Prefetch("memberships", queryset=Membership.objects.select_related("user").order_by("user__username"))
    # Each team's count is one row kept by triggers (TeamRequestCount, #23), plus its deltas not yet
    # folded (one statement: a fold is seen whole or not at all): counting a team's requests read
    # all of them (from the (team, -id) index) on every admin home page.
    fold_request_counts()
    counted = TeamRequestCount.objects.filter(team=OuterRef("pk")).values("n")
    pending = (RequestCountDelta.objects.filter(team_id=OuterRef("pk")).order_by().values("team_id")
               .annotate(n=Sum("n")).values("n"))
    # sum() of bigints is numeric in PostgreSQL: cast back, so the page gets an int.
    total = Cast(Coalesce(Subquery(counted), 0) + Coalesce(Subquery(pending), 0), BigIntegerField())
    return (Team.objects.annotate(request_count=total)
            .prefetch_related(members).order_by("name"))


def policy_matrix() -> dict:
    """{"environments", "risks", "rows": [(type label, [[policy per risk] per environment])]}."""
    policies = {(p.environment, p.request_type, p.risk): p for p in ApprovalPolicy.objects.all()}
    rows = []
    for request_type, label in RequestType.choices:
        cells = [[policies.get((env, request_type, risk)) for risk in Risk.values] for env in Environment.values]
        rows.append((request_type, label, cells))
    return {"environments": Environment.choices, "risks": Risk.values, "rows": rows}
