"""Change sets (access as code, docs/access-as-code.md): the requests one apply filed, seen and
decided together. Anyone who may see the requests sees the set; reviewers approve or reject all
its open requests at once (each still gets its own approval on its own plan hash)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.errors import DomainError
from portal.personas import is_reviewer
from portal.selectors.change_sets import change_set_get_for, change_sets_for
from portal.services.auth import client_ip
from portal.services.change_sets import change_set_approve, change_set_reject


@login_required
@require_GET
def change_set_list(request):
    page = Paginator(change_sets_for(request.user), 50).get_page(request.GET.get("page"))
    return render(request, "change_sets/list.html", {"page": page})


@login_required
@require_GET
def change_set_detail(request, pk: int):
    change_set = change_set_get_for(request.user, pk)
    items = list(change_set.items.all())
    waiting = [item for item in items if item.request.status == "submitted"]
    return render(request, "change_sets/detail.html", {
        "change_set": change_set, "items": items, "waiting": waiting,
        "can_decide": bool(waiting) and is_reviewer(request.user)})


@login_required
@require_POST
def change_set_decide(request, pk: int, action: str):
    if action not in ("approve", "reject") or not is_reviewer(request.user):
        raise PermissionDenied
    change_set = change_set_get_for(request.user, pk)
    service = change_set_approve if action == "approve" else change_set_reject
    try:
        service(change_set=change_set, reviewer=request.user, comment=request.POST.get("comment", "")[:2000],
                actor_ip=client_ip(request))
        messages.success(request, f"Change set #{change_set.pk}: every open request {action}d.")
    except DomainError as exc:
        messages.error(request, f"Nothing was {action}d: {exc.detail}")
    return redirect("change-set-detail", pk=change_set.pk)
