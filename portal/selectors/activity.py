"""When a role was last seen connected (samples of pg_stat_activity, provisioning/activity.py).

Evidence for access reviews: a certifier deciding on a privilege sees whether its holder still
uses it. Callers are the review selectors and pages, which decide who may see an item; these
functions take an instance the caller already resolved and apply no scope of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Q

from provisioning.models import RoleLastSeen


def _instance_id(instance: Any) -> int:
    return instance if isinstance(instance, int) else instance.pk


def last_seen(instance: Any, role: str) -> datetime | None:
    """The last time `role` was seen connected to `instance` (a row or its id); None: never
    seen since sampling began."""
    return (RoleLastSeen.objects.filter(instance_id=_instance_id(instance), role=role)
            .values_list("last_seen_at", flat=True).first())


def last_seen_many(pairs: Iterable[tuple[Any, str]]) -> dict[tuple[int, str], datetime]:
    """{(instance id, role): last seen} for many (instance, role) pairs in one query; pairs never
    seen are absent. The (instance, role) unique index answers each pair."""
    wanted = {(_instance_id(instance), role) for instance, role in pairs}
    if not wanted:
        return {}
    by_instance: dict[int, set[str]] = {}
    for instance_id, role in wanted:
        by_instance.setdefault(instance_id, set()).add(role)
    condition = Q()
    for instance_id, roles in by_instance.items():
        condition |= Q(instance_id=instance_id, role__in=sorted(roles))
    rows = RoleLastSeen.objects.filter(condition).values_list("instance_id", "role", "last_seen_at")
    return {(instance_id, role): seen for instance_id, role, seen in rows}


def last_seen_for_instance(instance: Any) -> dict[str, datetime]:
    """{role: last seen} of every role ever seen on one instance."""
    rows = RoleLastSeen.objects.filter(instance_id=_instance_id(instance)).values_list("role", "last_seen_at")
    return dict(rows)
