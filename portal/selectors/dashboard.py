"""Numbers for the reviewer / admin dashboard charts (what the user may see, last N days)."""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from portal.choices import DriftStatus, RequestStatus
from portal.models import ChangeRequest
from provisioning.models import DriftFinding

DAYS = 14


def dashboard_data(user: Any, *, days: int = DAYS) -> dict:
    """{"days": [iso dates], "per_status": {status: [count per day]}, "median_minutes": [..|None],
        "drift": {"labels": [instance], "counts": [open findings]}}"""
    today = timezone.now().date()
    start = today - timedelta(days=days - 1)
    day_list = [start + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    requests = ChangeRequest.objects.restrict(user, "view").filter(created_at__date__gte=start)

    per_status: dict[str, list[int]] = {s: [0] * days for s in RequestStatus.values}
    rows = (requests.annotate(day=TruncDate("created_at")).values("day", "status")
            .annotate(n=Count("id", distinct=True)).order_by())
    for row in rows:
        if row["day"] in index:
            per_status[row["status"]][index[row["day"]]] += row["n"]

    durations: dict[int, list[float]] = {}
    applied = (ChangeRequest.objects.restrict(user, "view")
               .filter(status=RequestStatus.APPLIED, applied_at__date__gte=start)
               .values_list("created_at", "applied_at").order_by())
    for created_at, applied_at in applied:
        i = index.get(applied_at.date())
        if i is not None:
            durations.setdefault(i, []).append((applied_at - created_at).total_seconds() / 60)
    median = [round(statistics.median(durations[i]), 1) if i in durations else None for i in range(days)]

    drift = (DriftFinding.objects.restrict(user, "view").filter(status=DriftStatus.OPEN)
             .values("instance__name").annotate(n=Count("id")).order_by("-n", "instance__name"))
    return {
        "days": [d.isoformat() for d in day_list],
        "per_status": {s: counts for s, counts in per_status.items() if any(counts)},
        "median_minutes": median,
        "drift": {"labels": [r["instance__name"] for r in drift], "counts": [r["n"] for r in drift]},
        "totals": {"requests": sum(sum(c) for c in per_status.values()),
                   "applied": sum(len(d) for d in durations.values()),
                   "open_drift": sum(r["n"] for r in drift)},
    }
