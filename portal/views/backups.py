"""An instance's backups page (issue #20): policy, catalog, drill history with its RTO/RPO chart.

Platform admins, reviewers and auditors see it (developers: 403); only platform admins change
the policy, take a backup or run a drill now (403 for anyone else; the services check again).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.errors import DomainError
from portal.forms.backups import BackupPolicyForm
from portal.personas import is_admin, sees_everything
from portal.selectors.backups import backup_list, drill_list, drill_series
from portal.selectors.instances import instance_get_for
from portal.services.auth import client_ip
from portal.services.backups import backup_policy_set, backup_request, drill_request, policy_for

PAGE_ROWS = 50


def _post(request, instance) -> None:
    action = request.POST.get("action", "")
    actor = {"actor": request.user, "actor_ip": client_ip(request)}
    if action == "policy":
        form = BackupPolicyForm(request.POST)
        if not form.is_valid():
            for field, errors in form.errors.items():
                messages.error(request, f"{field}: {' '.join(errors)}")
            return
        backup_policy_set(instance=instance, **actor, **form.cleaned_data)
        messages.success(request, "Backup policy saved.")
    elif action == "backup":
        backup_request(instance=instance, **actor)
        messages.success(request, "Backup queued: it appears in the catalog when the worker starts it.")
    elif action == "drill":
        drill = drill_request(instance=instance, **actor)
        messages.success(request, f"Restore drill #{drill.pk} queued.")
    else:
        messages.error(request, "action: one of policy, backup, drill")


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def instance_backups(request, pk: int):
    instance = instance_get_for(request.user, pk)
    if not sees_everything(request.user):
        raise PermissionDenied
    if request.method == "POST":
        if not is_admin(request.user):
            raise PermissionDenied
        try:
            _post(request, instance)
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("instance-backups", pk=instance.pk)
    policy = policy_for(instance)
    form = BackupPolicyForm(initial={
        "enabled": policy.enabled, "method": policy.method, "interval_hours": policy.interval_hours,
        "retention_count": policy.retention_count, "retention_days": policy.retention_days,
        "drill_interval_hours": policy.drill_interval_hours,
        "check_queries": json.dumps(policy.check_queries, indent=1) if policy.check_queries else ""})
    return render(request, "instances/backups.html", {
        "instance": instance,
        "policy": policy,
        "form": form,
        "can_manage": is_admin(request.user),
        "backups": list(backup_list(request.user, instance)[:PAGE_ROWS]),
        "drills": list(drill_list(request.user, instance)[:PAGE_ROWS]),
        "series": drill_series(instance),
    })
