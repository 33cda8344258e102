"""What the user's teams hold on each instance: roles and live grants (the "My access" page)."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from portal.models import Grant, ManagedRole, Team


def access_overview(user: Any) -> dict:
    """{"teams", "grants", "roles", "by_instance": [(instance, {"roles": [..], "grants": [..]})]}.

    Only the teams the user belongs to (even for reviewers/admins: it is *my* access).
    """
    teams = list(Team.objects.filter(memberships__user=user).order_by("name"))
    grants = list(
        Grant.objects.filter(team__in=teams, revoked_at__isnull=True)
        .select_related("instance", "team", "request")
        .order_by("instance__name", "database", "schema", "role")
    )
    roles = list(
        ManagedRole.objects.filter(team__in=teams, dropped_at__isnull=True)
        .select_related("instance", "team")
        .order_by("instance__name", "name")
    )
    by_instance: dict[int, dict] = {}
    for instance, items in groupby(roles, key=lambda r: r.instance):
        by_instance.setdefault(instance.pk, {"instance": instance, "roles": [], "grants": []})["roles"] = list(items)
    for instance, items in groupby(grants, key=lambda g: g.instance):
        by_instance.setdefault(instance.pk, {"instance": instance, "roles": [], "grants": []})["grants"] = list(items)
    return {"teams": teams, "grants": grants, "roles": roles,
            "by_instance": sorted(by_instance.values(), key=lambda e: e["instance"].name)}
