"""Change sets a user may see: those whose requests they may see (all of a set's requests share
its team and instance, so seeing one is seeing all)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from portal.models import ChangeRequest, ChangeSet, ChangeSetItem


def change_sets_for(user: Any) -> QuerySet[ChangeSet]:
    visible = ChangeRequest.objects.restrict(user, "view").values("pk")
    items = ChangeSetItem.objects.select_related("request").order_by("position")
    return (ChangeSet.objects.filter(items__request__in=visible).distinct()
            .select_related("team", "instance", "created_by").prefetch_related(Prefetch("items", queryset=items))
            .order_by("-id"))


def change_set_get_for(user: Any, pk: Any) -> ChangeSet:
    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        from django.http import Http404

        raise Http404("no such change set")
    return get_object_or_404(change_sets_for(user), pk=pk)
