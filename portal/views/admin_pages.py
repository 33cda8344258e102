"""Admin pages: teams and their members, approval policies. Platform admins only."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from portal.errors import DomainError
from portal.forms.admin import MemberAddForm, PolicyForm, TeamCreateForm
from portal.models import ApprovalPolicy, Team
from portal.personas import is_admin
from portal.selectors.admin import policy_matrix, team_list_with_members
from portal.services.auth import client_ip
from portal.services.policies import policy_update
from portal.services.teams import team_create, team_member_add, team_member_remove


def _admin_only(request) -> None:
    if not is_admin(request.user):
        raise PermissionDenied


@login_required
@require_http_methods(["GET", "POST"])
def team_list(request):
    _admin_only(request)
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = team_create(actor=request.user, actor_ip=client_ip(request), **form.cleaned_data)
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Team {team.name} created.")
            return redirect("team-detail", pk=team.pk)
    return render(request, "admin/teams.html", {"teams": team_list_with_members(), "form": form},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def team_detail(request, pk: int):
    _admin_only(request)
    team = get_object_or_404(Team, pk=pk)
    usernames = list(get_user_model().objects.filter(is_active=True).order_by("username")
                     .values_list("username", flat=True)[:500])
    form = MemberAddForm(usernames=usernames)
    if request.method == "POST":
        ip = client_ip(request)
        if request.POST.get("remove"):
            try:
                team_member_remove(actor=request.user, team=team, username=request.POST["remove"], actor_ip=ip)
            except DomainError as exc:
                messages.error(request, exc.detail)
            else:
                messages.success(request, f"{request.POST['remove']} removed from {team.name}.")
            return redirect("team-detail", pk=team.pk)
        form = MemberAddForm(request.POST, usernames=usernames)
        if form.is_valid():
            try:
                team_member_add(actor=request.user, team=team, actor_ip=ip, **form.cleaned_data)
            except DomainError as exc:
                form.add_domain_error(exc)
            else:
                messages.success(request, f"{form.cleaned_data['username']} is now a {form.cleaned_data['role']} "
                                          f"of {team.name}.")
                return redirect("team-detail", pk=team.pk)
    memberships = team.memberships.select_related("user").order_by("user__username")
    return render(request, "admin/team_detail.html", {"team": team, "memberships": memberships, "form": form},
                  status=400 if form.errors else 200)


@login_required
@require_GET
def policy_list(request):
    _admin_only(request)
    return render(request, "admin/policies.html", policy_matrix())


@login_required
@require_http_methods(["GET", "POST"])
def policy_edit(request, pk: int):
    _admin_only(request)
    policy = get_object_or_404(ApprovalPolicy, pk=pk)
    initial = {"approvals_required": policy.approvals_required, "approver_groups": policy.approver_groups,
               "require_owner_lead": policy.require_owner_lead, "auto_approve": policy.auto_approve}
    form = PolicyForm(request.POST or None, initial=initial)
    auto_allowed = policy.environment == "dev" and policy.risk == "low"
    if not auto_allowed:
        form.fields["auto_approve"].disabled = True
    if request.method == "POST" and form.is_valid():
        try:
            policy_update(actor=request.user, policy=policy, actor_ip=client_ip(request), **form.cleaned_data)
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Policy {policy.environment} / {policy.request_type} / {policy.risk} saved.")
            return redirect("policy-list")
    return render(request, "admin/policy_edit.html", {"policy": policy, "form": form, "auto_allowed": auto_allowed},
                  status=400 if form.errors else 200)
