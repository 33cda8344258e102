"""Home: a page per persona."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse

from portal.choices import Persona
from portal.context_processors import persona_of
from portal.models import ChangeRequest, Instance, Team


@login_required
def home(request):
    persona = persona_of(request.user)
    if persona == Persona.AUDITORS.value:
        # An auditor's home is the audit log; a searched request id opens its events.
        searched = request.GET.get("q", "").strip().lstrip("#")
        return redirect(reverse("audit-log") + (f"?request={searched}" if searched.isdigit() else ""))
    requests = (
        ChangeRequest.objects.restrict(request.user, "view")
        .select_related("team", "instance", "requester")
        .order_by("-id")[:15]
    )
    context = {
        "persona": persona,
        "recent_requests": requests,
        "instances": Instance.objects.restrict(request.user, "view").order_by("name")[:20],
        "teams": Team.objects.restrict(request.user, "view").order_by("name"),
    }
    return render(request, "home.html", context)
