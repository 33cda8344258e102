"""Reads of single sign-on: the group mappings (platform admins only) and who signed in through the provider."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.models import GroupMapping, IdentityLink


def group_mappings() -> QuerySet[GroupMapping]:
    """Every mapping with its team, by group (one query)."""
    return GroupMapping.objects.select_related("team").order_by("group", "team__name", "persona")


def identity_links_count() -> int:
    return IdentityLink.objects.count()
