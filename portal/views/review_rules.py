"""Review rules page: platform admins switch DDL review rules per environment."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.errors import DomainError
from portal.personas import is_admin
from portal.selectors.ddl_rules import rule_matrix
from portal.services.auth import client_ip
from portal.services.ddl_rules import rule_setting_set
from provisioning.ddl.functions import ALLOWED_FUNCTIONS, ALLOWLIST_VERSION


def _context() -> dict:
    # The function allow-list is part of what reviewers approve: shown with its version.
    return {"rows": rule_matrix(), "allowlist_version": ALLOWLIST_VERSION,
            "function_groups": [(group, sorted(names)) for group, names in ALLOWED_FUNCTIONS.items()]}


@login_required
@require_http_methods(["GET", "POST"])
def review_rules(request):
    if not is_admin(request.user):
        raise PermissionDenied
    if request.method == "POST":
        try:
            setting = rule_setting_set(
                actor=request.user, actor_ip=client_ip(request),
                environment=request.POST.get("environment", ""), rule_id=request.POST.get("rule_id", ""),
                enabled=request.POST.get("enabled") == "on",
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
            return render(request, "review_rules/list.html", _context(), status=400)
        messages.success(request, f"{setting.rule_id} is now {'on' if setting.enabled else 'off'} "
                                  f"in {setting.get_environment_display()}.")
        return redirect("review-rules")
    return render(request, "review_rules/list.html", _context())
