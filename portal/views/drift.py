"""Drift: privileges seen on a cluster that the portal did not grant (or missing ones)."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.choices import DriftStatus
from portal.querysets import is_reviewer
from portal.selectors.drift import drift_list_for


@login_required
@require_GET
def drift_list(request):
    if not is_reviewer(request.user):
        raise PermissionDenied
    status = request.GET.get("status", DriftStatus.OPEN)
    if status not in DriftStatus.values and status != "all":
        status = DriftStatus.OPEN
    findings = drift_list_for(request.user, status=None if status == "all" else status)
    page = Paginator(findings, 50).get_page(request.GET.get("page"))
    return render(request, "drift/list.html", {"page": page, "status": status, "statuses": DriftStatus.choices})
