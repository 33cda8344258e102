"""The review queue: pending requests sorted by risk then age, a page at a time; rows expand to the plan."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.personas import is_reviewer
from portal.selectors.breakglass import break_glass_reviews_pending, mark_overdue
from portal.selectors.paging import BoundedCountPaginator, count_bound
from portal.selectors.requests import PENDING_COUNT_SHOWN, pending_count_label, pending_reviews_queryset

# A page of the queue, paged as the request list is: its cost stays flat however many requests
# wait (bench/scale.py). 20 rather than the list's 25: each row carries its plan and two dialogs
# (one with the plan again), 1.3 ms of rendering a row against 22 ms for the rest of the page
# (measured at 10k requests). A decision lands on the queue's first row (views/requests.py
# _next_in_queue), which is always on page 1.
PAGE_SIZE = 20
BREAK_GLASS_LIMIT = 200


@login_required
@require_GET
def review_queue(request):
    if not is_reviewer(request.user):
        raise PermissionDenied
    # Counted up to PENDING_COUNT_SHOWN, or one past the asked page (selectors.paging): the heading
    # and the badge say "100+" past it, the page and its Next link stay exact.
    number = request.GET.get("page")
    paginator = BoundedCountPaginator(pending_reviews_queryset(request.user), PAGE_SIZE,
                                      bound=count_bound(number, PAGE_SIZE, PENDING_COUNT_SHOWN))
    page = paginator.get_page(number)
    # The paginator's COUNT is the nav badge's number too (context_processors.navigation): one COUNT.
    request.pending_review_count = paginator.count
    # Break-glass requests applied without approval, owed a post-hoc review (most overdue first).
    break_glass_rows = mark_overdue(list(break_glass_reviews_pending(request.user)[:BREAK_GLASS_LIMIT]))
    # The heading's label by the nav badge's rule (one function): the same count, the same words.
    return render(request, "reviews/queue.html", {"page": page, "rows": page.object_list,
                                                  "count_label": pending_count_label(paginator.count),
                                                  "break_glass_rows": break_glass_rows})
