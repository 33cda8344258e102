"""Home: a page per persona (developer, reviewer, auditor, admin)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET

from portal.choices import Persona
from portal.context_processors import persona_of
from portal.selectors.access import access_overview
from portal.selectors.admin import team_list_with_members
from portal.selectors.dashboard import dashboard_data
from portal.selectors.drift import drift_list_for
from portal.selectors.instances import instance_list_for
from portal.selectors.requests import pending_reviews_queryset, request_list_for


@login_required
@require_GET
def home(request):
    persona = persona_of(request.user)
    user = request.user
    if persona == Persona.AUDITORS.value:
        # An auditor's home is the audit log; a searched request id opens its events.
        try:
            audit_log = reverse("audit-log")
        except NoReverseMatch:
            audit_log = None  # the audit pages are not installed: show the plain home below
        if audit_log:
            searched = request.GET.get("q", "").strip().lstrip("#")
            return redirect(audit_log + (f"?request={searched}" if searched.isdigit() else ""))
    context: dict = {"persona": persona}
    if persona == Persona.REQUESTERS.value:
        context["recent_requests"] = list(request_list_for(user)[:15])
        context.update(access_overview(user))
        context["instances"] = list(instance_list_for(user)[:20])
    elif persona in (Persona.REVIEWERS.value, Persona.ADMINS.value):
        context["queue"] = list(pending_reviews_queryset(user)[:10])
        context["charts"] = dashboard_data(user)
        context["drift"] = list(drift_list_for(user)[:5])
        if persona == Persona.ADMINS.value:
            context["instances"] = list(instance_list_for(user))
            context["teams"] = list(team_list_with_members())
    else:
        context["recent_requests"] = list(request_list_for(user)[:15])
    return render(request, "home.html", context)
