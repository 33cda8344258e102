"""Dashboard data as JSON (the charts on the reviewer / admin home read it from a json_script tag too)."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from portal.personas import is_reviewer
from portal.selectors.dashboard import dashboard_data as dashboard_numbers


@login_required
@require_GET
def dashboard_data(request):
    if not is_reviewer(request.user):
        raise PermissionDenied
    return JsonResponse(dashboard_numbers(request.user))
