"""The top bar's search: requests by id (#12 or 12), role or schema name, within what the user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from portal.selectors.requests import request_list_for

LIMIT = 50


def request_search(user: Any, query: str) -> list:
    query = query.strip()
    if not query:
        return []
    requests = request_list_for(user)
    number = query.lstrip("#")
    if number.isdigit():
        return list(requests.filter(pk=int(number))[:1])
    term = query.lower()
    match = (Q(payload__name__icontains=term) | Q(payload__role__icontains=term) | Q(payload__schema__icontains=term)
             | Q(payload__owner_role__icontains=term) | Q(payload__member_of__icontains=term))
    return list(requests.filter(match).order_by("-id")[:LIMIT])
