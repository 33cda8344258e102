"""Drift: privileges seen on a cluster that the portal did not grant (or missing ones).

Actions call the provisioning engine (provisioning/drift.py): acknowledge a finding, file a revoke
request for an unexpected privilege, scan an instance now.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.choices import DriftStatus
from portal.errors import DomainError
from portal.personas import is_auditor, is_reviewer
from portal.selectors.drift import drift_list_for, needs_attention_count
from portal.selectors.instances import instance_get_for
from portal.services.auth import client_ip
from portal.services.drift import drift_acknowledge, drift_revoke
from provisioning.drift import drift_scan_all


def _reviewers_only(request) -> None:
    if not is_reviewer(request.user):
        raise PermissionDenied


def _readers_only(request) -> None:
    """Auditors read drift (it is compliance evidence, as in the API) but never act on it."""
    if not (is_reviewer(request.user) or is_auditor(request.user)):
        raise PermissionDenied


def _back(request, default: str = "drift-list"):
    target = request.POST.get("next", "")
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target)
    return redirect(default)


@login_required
@require_GET
def drift_list(request):
    _readers_only(request)
    status = request.GET.get("status", DriftStatus.OPEN)
    if status not in DriftStatus.values and status != "all":
        status = DriftStatus.OPEN
    findings = drift_list_for(request.user, status=None if status == "all" else status)
    page = Paginator(findings, 50).get_page(request.GET.get("page"))
    return render(request, "drift/list.html", {"page": page, "status": status, "statuses": DriftStatus.choices,
                                               "can_act": is_reviewer(request.user),
                                               "needs_attention": needs_attention_count(request.user)})


@login_required
@require_POST
def drift_action(request, pk: int, action: str):
    """acknowledge | revoke one finding."""
    _reviewers_only(request)
    finding = get_object_or_404(drift_list_for(request.user, status=None), pk=pk)
    try:
        if action == "acknowledge":
            drift_acknowledge(finding=finding, user=request.user, comment=request.POST.get("comment", "")[:2000],
                              actor_ip=client_ip(request))
            messages.success(request, f"Finding on {finding.role} acknowledged.")
        elif action == "revoke":
            change = drift_revoke(finding=finding, user=request.user, actor_ip=client_ip(request))
            messages.success(request, f"Revoke request #{change.pk} filed; it needs the usual approvals.")
            return redirect("request-detail", pk=change.pk)
        else:
            raise PermissionDenied
    except DomainError as exc:
        messages.error(request, f"Could not {action} the finding: {exc.detail}")
    return _back(request)


@login_required
@require_POST
def drift_scan_now(request, pk: int):
    """Scan one instance now (synchronously: one catalog query) and come back with the result."""
    _reviewers_only(request)
    instance = instance_get_for(request.user, pk)
    result = drift_scan_all(instance=instance).get(instance.name, {})
    if "error" in result:
        messages.error(request, f"Scan of {instance.name} failed: {result['error']}")
    else:
        messages.success(request, f"Scanned {instance.name}: {result.get('findings', 0)} finding(s), "
                                  f"{result.get('new', 0)} new, {result.get('resolved', 0)} resolved.")
    return _back(request)
