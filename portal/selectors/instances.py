from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404

from portal.models import ChangeRequest, Instance


def instance_list_for(user: Any):
    return Instance.objects.restrict(user, "view").select_related("replica_of").order_by("name")


def instance_get_for(user: Any, pk: int) -> Instance:
    return get_object_or_404(instance_list_for(user), pk=pk)


def instance_recent_requests(user: Any, instance: Instance, limit: int = 10):
    return (
        ChangeRequest.objects.restrict(user, "view")
        .filter(instance=instance)
        .select_related("team", "requester")
        .order_by("-id")[:limit]
    )
