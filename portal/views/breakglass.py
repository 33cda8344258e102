"""Break-glass pages: file an emergency grant, review one after the fact, switch it per environment.

Who: any signed-in user sees the form (the service refuses all but requesters of the owning team,
where the environment allows it); reviewers and admins review (from the review queue or the
request page); platform admins switch environments on and off.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.errors import DomainError
from portal.forms.breakglass import BreakGlassForm, BreakGlassReviewForm
from portal.personas import is_admin
from portal.selectors.breakglass import break_glass_list_for
from portal.services.auth import client_ip
from portal.services.breakglass import (
    break_glass_review,
    break_glass_setting_update,
    break_glass_settings,
    break_glass_submit,
    max_minutes,
)


@login_required
@require_http_methods(["GET", "POST"])
def break_glass_new(request):
    form = BreakGlassForm(request.POST or None, user=request.user, max_minutes=max_minutes())
    if request.method == "POST" and form.is_valid():
        try:
            change = break_glass_submit(user=request.user, actor_ip=client_ip(request), **form.service_arguments())
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.warning(request, f"Break-glass request #{change.pk} is being applied now. Reviewers have been "
                                      "told; they review it within 24 hours.")
            return redirect("request-detail", change.pk)
    return render(request, "breakglass/new.html", {"form": form, "settings": break_glass_settings()},
                  status=400 if form.errors else 200)


def _back(request, default: str):
    target = request.POST.get("next", "")
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target)
    return redirect(default)


@login_required
@require_POST
def break_glass_review_view(request, pk: int):
    record = break_glass_list_for(request.user).filter(request_id=pk).first()
    if record is None:
        raise Http404
    form = BreakGlassReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give an outcome and a comment saying what you checked.")
        return _back(request, "review-queue")
    try:
        break_glass_review(request=record.request, reviewer=request.user, actor_ip=client_ip(request),
                           outcome=form.cleaned_data["outcome"], comment=form.cleaned_data["comment"])
    except DomainError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.detail) from exc
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Break-glass request #{pk}: {form.cleaned_data['outcome']}.")
    return _back(request, "review-queue")


@login_required
@require_http_methods(["GET", "POST"])
def break_glass_settings_view(request):
    if not is_admin(request.user):
        raise PermissionDenied
    if request.method == "POST":
        try:
            break_glass_setting_update(actor=request.user, actor_ip=client_ip(request),
                                       environment=request.POST.get("environment", ""),
                                       enabled=request.POST.get("enabled") == "on")
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, "Break-glass setting saved.")
        return redirect("break-glass-settings")
    return render(request, "breakglass/settings.html", {"settings": break_glass_settings()})
