"""The entitlements page: who can access what, live or as of a date (auditors, reviewers, admins)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from audit.selectors import parse_moment
from audit.services import audit_access_record
from portal.errors import InvalidPayload
from portal.models import Instance
from portal.personas import is_auditor, is_reviewer
from portal.selectors.drift import needs_attention_count
from portal.selectors.entitlements import entitlements_for, instances_for
from portal.services.auth import client_ip


@login_required
@require_GET
def entitlements(request):
    """Who can access what, live or as of a date, with the unexplained privileges highlighted."""
    if not (is_auditor(request.user) or is_reviewer(request.user)):
        raise PermissionDenied("auditors, reviewers and platform admins only")
    params = request.GET
    errors: dict[str, list[str]] = {}
    report = None
    at = None
    chosen: list[Instance] = []
    try:
        if params.get("at"):
            at = parse_moment("at", params["at"], end_of_day=True)
        chosen = instances_for(params.get("instance", ""))
        if params.get("instance") and not chosen:
            raise InvalidPayload.field("instance", "no instance with this id or name")
        report = entitlements_for(instances=chosen, at=at, role=params.get("role", "").strip(),
                                  schema=params.get("schema", "").strip())
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="entitlements", parameters=params)
    except InvalidPayload as exc:
        errors = exc.errors
    query = urlencode({k: params[k] for k in ("instance", "role", "schema", "at") if params.get(k)})
    rows = report.rows if report else []
    return render(request, "access/entitlements.html", {
        "report": report, "rows": rows, "errors": errors,
        "unexplained": sum(1 for r in rows if r.unexplained),
        # Live: the same number as Drift's open findings (#19), whatever the rows' grouping.
        "needs_attention": needs_attention_count(request.user, chosen)
        if report is not None and report.mode == "live" else None,
        "filters": {k: params.get(k, "") for k in ("instance", "role", "schema", "at")},
        "instances": Instance.objects.order_by("name").values_list("name", flat=True),
        "csv_url": f"{reverse('api:entitlements')}?format=csv{'&' + query if query else ''}",
        "today": date.today().isoformat(),
        "as_of_label": (at - timedelta(microseconds=1)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "",
        "now": datetime.now(UTC),
    })
