"""Break-glass reads: the post-hoc reviews a reviewer owes, and one request's break-glass record.

Reviewers and platform admins see every break-glass request's review (the review queue); a
requester's own break-glass requests stay visible to them through the normal request scope.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from portal.models import BreakGlass, ChangeRequest
from portal.personas import is_reviewer


def break_glass_reviews_pending(user: Any) -> QuerySet[BreakGlass]:
    """Unreviewed break-glass requests the user may review (never their own), the most overdue
    first; each row carries `overdue` (the due time has passed)."""
    if not is_reviewer(user):
        return BreakGlass.objects.none()
    return (BreakGlass.objects.filter(reviewed_at__isnull=True).exclude(request__requester=user)
            .select_related("request", "request__instance", "request__team", "request__requester")
            .order_by("review_due_at", "pk"))


def break_glass_review_count(user: Any) -> int:
    return break_glass_reviews_pending(user).count()


def mark_overdue(rows: list[BreakGlass], now: Any = None) -> list[BreakGlass]:
    now = now or timezone.now()
    for row in rows:
        row.overdue = row.review_due_at < now
    return rows


def break_glass_for(request: ChangeRequest) -> BreakGlass | None:
    """The break-glass record of a request (None for an ordinary one; no query then)."""
    if not request.break_glass:
        return None
    return BreakGlass.objects.select_related("reviewed_by").filter(request=request).first()


def break_glass_list_for(user: Any, *, pending: bool | None = None) -> QuerySet[BreakGlass]:
    """Break-glass records of the requests the user may see (reviewers: all), newest first."""
    rows = BreakGlass.objects.select_related("request", "request__instance", "request__team",
                                             "request__requester", "reviewed_by")
    if not is_reviewer(user):
        rows = rows.filter(request__in=ChangeRequest.objects.restrict(user, "view").values("pk"))
    if pending is not None:
        rows = rows.filter(reviewed_at__isnull=pending)
    return rows.order_by("-pk")
