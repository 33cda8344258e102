"""Numbers for the reviewer / admin dashboard charts (what the user may see, last N days).

Every number is an aggregate PostgreSQL computes (counts per day and status, the median time to
apply per day, open drift per instance), over ranges of indexed columns (created_at, applied_at:
models/request.py): a dashboard reads a few hundred rows of results, not the requests themselves.
The counts per day and status are sums of RequestCount's 15-minute slots, which triggers keep as
requests are filed and change status (through RequestCountDelta), and a closed day's median is computed once and kept
(RequestMedianDay): their cost does not grow with the requests of the window (#23; bench/scale.py
files all its requests within minutes, so all of them fall in one window).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, QuerySet
from django.db.models.functions import Extract, TruncDate
from django.utils import timezone

from portal.choices import DriftStatus, RequestStatus
from portal.models import ChangeRequest, RequestMedianDay
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

    median: list[float | None] = [None] * days
    applied_count = 0
    for day, (n, value) in _medians_per_day(user, visible, since, day_list, today).items():
        i = index.get(day)
        if i is not None and n:
            median[i] = round(value, 1)
            applied_count += n

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


def _applied_per_day(visible: QuerySet, since: datetime, until: datetime | None = None) -> dict:
    """{day: (requests applied that day, their median minutes from submit to applied)}."""
    minutes = Extract(ExpressionWrapper(F("applied_at") - F("created_at"), output_field=DurationField()),
                      "epoch") / 60.0
    applied = visible.filter(status=RequestStatus.APPLIED, applied_at__gte=since)
    if until is not None:
        applied = applied.filter(applied_at__lt=until)
    rows = (applied.annotate(day=TruncDate("applied_at")).values("day")
            .annotate(n=Count("*"), median=Median(minutes)).order_by())
    return {row["day"]: (row["n"], row["median"]) for row in rows}


# Held exclusively while the dashboard computes closed days' medians, shared by the triggers that
# drop them (migration 0022): a fill never keeps a median a concurrent writer has just changed.
MEDIAN_LOCK = "dbportal.dashboard.median_days"


def _medians_per_day(user: Any, visible: QuerySet, since: datetime, day_list: list, today: date) -> dict:
    """{day: (applied, median)} for the days of the window: today's (and any later day's) computed
    from its requests; a closed day's read from RequestMedianDay, computed and kept the first time,
    so a dashboard reads today's applied requests, not the 14 days' (#23). For a user who does not
    see every request, all of them computed, as their requests differ from the kept ones."""
    if not sees_everything(user):
        return _applied_per_day(visible, since)
    zone = timezone.get_current_timezone_name()
    today_start = timezone.make_aware(datetime.combine(today, time.min))
    closed = [day for day in day_list if day < today]
    kept = {row.day: (row.applied, row.median)
            for row in RequestMedianDay.objects.filter(zone=zone, day__in=closed)}
    missing = [day for day in closed if day not in kept]
    if missing:
        with transaction.atomic(), connection.cursor() as cursor:
            # Waits for writers that changed applied requests to commit; the query after it sees them.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [MEDIAN_LOCK])
            first = timezone.make_aware(datetime.combine(missing[0], time.min))
            computed = _applied_per_day(visible, first, today_start)
            fills = {day: computed.get(day, (0, None)) for day in missing}
            RequestMedianDay.objects.bulk_create(
                [RequestMedianDay(zone=zone, day=day, starts=_midnight(day), ends=_midnight(day + timedelta(days=1)),
                                  applied=n, median=value) for day, (n, value) in fills.items()],
                ignore_conflicts=True)
            # Days that left every window: the table stays at a window per time zone.
            RequestMedianDay.objects.filter(day__lt=day_list[0] - timedelta(days=1)).delete()
        kept.update(fills)
    return {**kept, **_applied_per_day(visible, today_start)}


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


# The counters and their deltas not yet folded, summed per local day (the day of a slot's start)
# in one statement, so a fold committing meanwhile is seen whole or not at all. The zone is the
# current time zone's name, as TruncDate passes it.
COUNTS_PER_DAY = """
SELECT (slot AT TIME ZONE %(zone)s)::date AS day, status, sum(n)::bigint AS n FROM (
  SELECT slot, status, n FROM portal_requestcount WHERE slot >= %(since)s
  UNION ALL
  SELECT slot, status, n FROM portal_requestcountdelta WHERE slot >= %(since)s
) AS counts
GROUP BY 1, 2
"""

# Moves the deltas the triggers appended into the counters, in one statement: what it deletes is
# what it adds (one snapshot), and a writer's deltas not yet committed wait for the next fold.
# Only folds write the counters, one at a time (the lock, tried once: a fold that finds another
# running moves nothing), so no writer ever waits for one. A deleted team's deltas go with it.
FOLD = """
WITH folding AS (
  SELECT pg_try_advisory_xact_lock(hashtext(%(lock)s)) AS held
), gone AS (
  DELETE FROM portal_requestcountdelta WHERE (SELECT held FROM folding) RETURNING slot, status, team_id, n
), slots AS (
  INSERT INTO portal_requestcount (slot, status, n)
  SELECT slot, status, sum(n) FROM gone GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
  ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n
)
INSERT INTO portal_teamrequestcount (team_id, n)
SELECT gone.team_id, sum(gone.n) FROM gone JOIN portal_team ON portal_team.id = gone.team_id
GROUP BY 1 HAVING sum(gone.n) <> 0 ORDER BY 1
ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n
"""
FOLD_LOCK = "dbportal.request_counts.fold"


def fold_request_counts() -> None:
    """Add the triggers' deltas to RequestCount and TeamRequestCount (the pages that read them call
    it first, so the deltas stay a few rows). A fold already running is left to finish them."""
    with connection.cursor() as cursor:
        cursor.execute(FOLD, {"lock": FOLD_LOCK})


def _counts_per_day(user: Any, visible: QuerySet, since: datetime, day_list: list) -> QuerySet | list[dict]:
    """Rows of {"day", "status", "n"}: the requests filed on each day since `since`, by status now.

    From RequestCount's slots when the user sees every request (the dashboard's reviewers and
    admins) and every midnight of the days falls on a slot's edge (true of every zone in use today;
    a zone with an odd historic offset would split a slot between two days); else counted from the
    requests themselves, the figures being the same."""
    midnights = [timezone.make_aware(datetime.combine(day, time.min)) for day in day_list]
    if sees_everything(user) and all(m.timestamp() % COUNT_SLOT_SECONDS == 0 for m in midnights):
        fold_request_counts()
        # A slot's day is its start's: with `since` on a slot's edge, slot >= since is created_at >= since.
        with connection.cursor() as cursor:
            cursor.execute(COUNTS_PER_DAY, {"zone": timezone.get_current_timezone_name(), "since": since})
            return [{"day": day, "status": status, "n": n} for day, status, n in cursor.fetchall()]
    # No DISTINCT: restrict() filters requests by subqueries, never joins that repeat a row.
    return (visible.filter(created_at__gte=since).annotate(day=TruncDate("created_at")).values("day", "status")
            .annotate(n=Count("*")).order_by())
