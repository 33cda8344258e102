"""The review queue: pending requests sorted by risk then age; rows expand to the plan."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.personas import is_reviewer
from portal.selectors.breakglass import break_glass_reviews_pending, mark_overdue
from portal.selectors.requests import pending_reviews_queryset

QUEUE_LIMIT = 200


@login_required
@require_GET
def review_queue(request):
    if not is_reviewer(request.user):
        raise PermissionDenied
    rows = list(pending_reviews_queryset(request.user)[:QUEUE_LIMIT])
    # Break-glass requests applied without approval, owed a post-hoc review (most overdue first).
    break_glass_rows = mark_overdue(list(break_glass_reviews_pending(request.user)[:QUEUE_LIMIT]))
    return render(request, "reviews/queue.html", {"rows": rows, "limit": QUEUE_LIMIT,
                                                  "break_glass_rows": break_glass_rows})
