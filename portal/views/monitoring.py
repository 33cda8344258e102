"""An instance's monitoring page (issue #21): charts of its samples, sessions and what blocks what,
the biggest tables, top statements and alerts; scoped per user by portal/selectors/monitoring.py."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.personas import is_admin
from portal.selectors.instances import instance_get_for
from portal.selectors.monitoring import monitoring_view_for, series_for, thresholds_view


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
