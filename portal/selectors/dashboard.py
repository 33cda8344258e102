"""Numbers for the reviewer / admin dashboard charts (what the user may see, last N days).

Every number is an aggregate PostgreSQL computes (counts per day and status, the median time to
apply per day, open drift per instance), over ranges of indexed columns (created_at, applied_at:
models/request.py): a dashboard reads a few hundred rows of results, not the requests themselves.
The counts per day and status are sums of RequestCount's 15-minute slots, which triggers keep as
requests are filed and change status: their cost does not grow with the requests of the window
(#23; bench/scale.py files all its requests within minutes, so all of them fall in one window).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, QuerySet, Sum
from django.db.models.functions import Extract, TruncDate
from django.utils import timezone

from portal.choices import DriftStatus, RequestStatus
from portal.models import ChangeRequest, RequestCount
from portal.models.request import COUNT_SLOT_SECONDS
from portal.personas import sees_everything
from provisioning.models import DriftFinding

DAYS = 14


class Median(Aggregate):
    """The median of a group, interpolated between the two middle values as statistics.median is."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def dashboard_data(user: Any, *, days: int = DAYS) -> dict:
    """{"days": [iso dates], "per_status": {status: [count per day]}, "median_minutes": [..|None],
        "drift": {"labels": [instance], "counts": [open findings]}}"""
    # Today in the days' time zone (TruncDate's, the current one): UTC's date would shift the
    # window by a day against the days' buckets wherever the two dates differ.
    today = timezone.localdate()
    start = today - timedelta(days=days - 1)
    # The first day's midnight in the days' time zone (TruncDate's): a range on the column itself,
    # so the index on it serves (created_at__date would compute a date for every row first).
    since = timezone.make_aware(datetime.combine(start, time.min))
    day_list = [start + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    visible = ChangeRequest.objects.restrict(user, "view")

    per_status: dict[str, list[int]] = {s: [0] * days for s in RequestStatus.values}
    for row in _counts_per_day(user, visible, since, day_list):
        if row["day"] in index:
            per_status[row["status"]][index[row["day"]]] += row["n"]

    minutes = Extract(ExpressionWrapper(F("applied_at") - F("created_at"), output_field=DurationField()),
                      "epoch") / 60.0
    applied = (visible.filter(status=RequestStatus.APPLIED, applied_at__gte=since)
               .annotate(day=TruncDate("applied_at")).values("day")
               .annotate(n=Count("*"), median=Median(minutes)).order_by())
    median: list[float | None] = [None] * days
    applied_count = 0
    for row in applied:
        i = index.get(row["day"])
        if i is not None:
            median[i] = round(row["median"], 1)
            applied_count += row["n"]

    drift = (DriftFinding.objects.restrict(user, "view").filter(status=DriftStatus.OPEN)
             .values("instance__name").annotate(n=Count("id")).order_by("-n", "instance__name"))
    return {
        "days": [d.isoformat() for d in day_list],
        "per_status": {s: counts for s, counts in per_status.items() if any(counts)},
        "median_minutes": median,
        "drift": {"labels": [r["instance__name"] for r in drift], "counts": [r["n"] for r in drift]},
        "totals": {"requests": sum(sum(c) for c in per_status.values()),
                   "applied": applied_count,
                   "open_drift": sum(r["n"] for r in drift)},
    }


def _counts_per_day(user: Any, visible: QuerySet, since: datetime, day_list: list) -> QuerySet:
    """Rows of {"day", "status", "n"}: the requests filed on each day since `since`, by status now.

    From RequestCount's slots when the user sees every request (the dashboard's reviewers and
    admins) and every midnight of the days falls on a slot's edge (true of every zone in use today;
    a zone with an odd historic offset would split a slot between two days); else counted from the
    requests themselves, the figures being the same."""
    midnights = [timezone.make_aware(datetime.combine(day, time.min)) for day in day_list]
    if sees_everything(user) and all(m.timestamp() % COUNT_SLOT_SECONDS == 0 for m in midnights):
        # A slot's day is its start's: with `since` on a slot's edge, slot >= since is created_at >= since.
        return (RequestCount.objects.filter(slot__gte=since).annotate(day=TruncDate("slot"))
                .values("day", "status").annotate(n=Sum("n")).order_by())
    # No DISTINCT: restrict() filters requests by subqueries, never joins that repeat a row.
    return (visible.filter(created_at__gte=since).annotate(day=TruncDate("created_at")).values("day", "status")
            .annotate(n=Count("*")).order_by())
