"""Home: a page per persona."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from portal.context_processors import persona_of
from portal.models import ChangeRequest, Instance, Team


@login_required
def home(request):
    persona = persona_of(request.user)
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
