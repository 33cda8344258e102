"""My access grouped per instance, from selectors.requests.my_access (the "My access" page)."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from portal.models import Team
from portal.selectors.requests import my_access


def access_overview(user: Any) -> dict:
    """{"teams", "grants", "roles", "by_instance": [(instance, {"roles": [..], "grants": [..]})]}.

    Only the teams the user belongs to (even for reviewers/admins: it is *my* access).
    """
    teams = list(Team.objects.filter(memberships__user=user).order_by("name"))
    held = my_access(user)
    grants = sorted(held["grants"], key=lambda g: (g.instance.name, g.database, g.schema, g.role))
    roles = sorted(held["roles"], key=lambda r: (r.instance.name, r.name))
    by_instance: dict[int, dict] = {}
    for instance, items in groupby(roles, key=lambda r: r.instance):
        by_instance.setdefault(instance.pk, {"instance": instance, "roles": [], "grants": []})["roles"] = list(items)
    for instance, items in groupby(grants, key=lambda g: g.instance):
        by_instance.setdefault(instance.pk, {"instance": instance, "roles": [], "grants": []})["grants"] = list(items)
    return {"teams": teams, "grants": grants, "roles": roles,
            "by_instance": sorted(by_instance.values(), key=lambda e: e["instance"].name)}
