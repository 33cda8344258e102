"""The SIEM forwarding page (platform admins only): each collector's cursor, lag, state and last
error, with pause and resume (audit/siem.py). Anyone else gets 403; anonymous visitors the login."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from audit.siem import UnknownCollector, collector_statuses, siem_pause, siem_resume
from portal.personas import is_admin
from portal.services.auth import client_ip


def _require_admin(user) -> None:
    if not is_admin(user):
        raise PermissionDenied("platform admins only")


@login_required
@require_GET
def siem_page(request):
    _require_admin(request.user)
    return render(request, "audit/siem.html", {"collectors": collector_statuses()})


@login_required
@require_POST
def siem_action(request, name: str, action: str):
    _require_admin(request.user)
    try:
        if action == "pause":
            siem_pause(name=name, actor=request.user, actor_ip=client_ip(request),
                       reason=request.POST.get("reason", "").replace("\x00", "")[:500])
            messages.success(request, f"Forwarding to {name} is paused; nothing is lost, the cursor waits.")
        else:
            siem_resume(name=name, actor=request.user, actor_ip=client_ip(request))
            messages.success(request, f"Forwarding to {name} resumes from its cursor.")
    except UnknownCollector:
        raise Http404("no such SIEM collector") from None
    return redirect("audit-siem")
