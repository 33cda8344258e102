"""An instance's monitoring page (issue #21): charts of its samples, sessions and what blocks what,
the biggest tables, top statements and alerts; scoped per user by portal/selectors/monitoring.py."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.errors import DomainError
from portal.personas import is_admin
from portal.selectors.instances import instance_get_for
from portal.selectors.monitoring import monitoring_view_for, series_for, thresholds_view
from portal.services.auth import client_ip
from portal.services.monitoring import alert_threshold_set


@login_required
@require_GET
def instance_monitoring(request, pk: int):
    instance = instance_get_for(request.user, pk)
    view = monitoring_view_for(request.user, instance)
    return render(request, "instances/monitoring.html", {
        "instance": instance,
        "m": view,
        "series": series_for(instance, hours=24),
        "thresholds": thresholds_view(instance),
        "can_set_thresholds": is_admin(request.user),
        "tables": view["tables"][:25],
    })


@login_required
@require_POST
def instance_threshold_set(request, pk: int):
    """A platform admin sets one alert threshold of the instance (`action`: set, off or reset)."""
    instance = instance_get_for(request.user, pk)
    if not is_admin(request.user):
        raise PermissionDenied
    kind, action = request.POST.get("kind", ""), request.POST.get("action", "set")
    value = None
    if action == "set":
        try:
            value = float(request.POST.get("value", "").strip())
        except ValueError:
            messages.error(request, "value: a number of at least 0")
            return redirect("instance-monitoring", pk=instance.pk)
    elif action not in ("off", "reset"):
        messages.error(request, "action: set, off or reset")
        return redirect("instance-monitoring", pk=instance.pk)
    try:
        alert_threshold_set(instance=instance, kind=kind, value=value, actor=request.user, actor_ip=client_ip(request),
                            reset=action == "reset")
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        if action == "set":
            messages.success(request, f"The {kind} alert of {instance.name} now opens at {value:g}.")
        elif action == "off":
            messages.success(request, f"The {kind} alert is off for {instance.name}.")
        else:
            messages.success(request, f"The {kind} alert of {instance.name} is back to its default.")
    return redirect("instance-monitoring", pk=instance.pk)
