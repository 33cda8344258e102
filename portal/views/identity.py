"""Single sign-on pages: the sign-in through the identity provider (start, callback) and the
group-mapping page of platform admins.

Anyone may start a sign-in; the callback signs in only the user the provider vouched for, with the
state, nonce and PKCE verifier of a sign-in this browser started (portal/services/oidc.py), and
only if the mapping lets them in (portal/services/identity.py). A provider that cannot be reached
is a 503 page that says so, a refused answer a 400 page naming the reason, a user the portal
refuses a 403 page: never a 500, and each one audited.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.errors import DomainError
from portal.forms.identity import GroupMappingForm
from portal.models import GroupMapping, Team
from portal.personas import is_admin
from portal.selectors.identity import group_mappings
from portal.services import oidc
from portal.services.auth import client_ip
from portal.services.identity import (
    SignInRefused,
    mapping_create,
    mapping_delete,
    mapping_update,
    oidc_sign_in,
    sign_in_failure_record,
)

_NEXT = "oidc_next"


def _redirect_uri(request) -> str:
    path = reverse("oidc-callback")
    # Behind a proxy the address people use is PORTAL_BASE_URL; it must be the one registered at the provider.
    return settings.PORTAL_BASE_URL + path if settings.PORTAL_BASE_URL else request.build_absolute_uri(path)


def _failure_page(request, exc: oidc.SignInFailed):
    unavailable = isinstance(exc, oidc.ProviderUnavailable)
    sign_in_failure_record(reason=exc.reason, actor_ip=client_ip(request))
    request.refusal_audited = True
    return render(request, "auth/oidc_problem.html",
                  {"unavailable": unavailable, "reason": exc.reason, "oidc_name": settings.OIDC_NAME,
                   "local_login": settings.LOCAL_LOGIN},
                  status=503 if unavailable else 400)


@require_GET
def oidc_start(request):
    """Send the browser to the provider (state, nonce and the PKCE verifier kept in the session)."""
    if not oidc.enabled():
        raise Http404
    wanted = request.GET.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        request.session[_NEXT] = wanted
    else:
        request.session.pop(_NEXT, None)
    try:
        return oidc.authorization_redirect(request, _redirect_uri(request))
    except oidc.SignInFailed as exc:
        return _failure_page(request, exc)


@require_GET
def oidc_callback(request):
    """The provider's answer: verify it, apply the mapping, sign the user in."""
    if not oidc.enabled():
        raise Http404
    try:
        claims, refresh_token = oidc.authorization_complete(request)
    except oidc.SignInFailed as exc:
        return _failure_page(request, exc)
    try:
        result = oidc_sign_in(claims=claims, issuer=settings.OIDC_ISSUER, actor_ip=client_ip(request),
                              refresh_token=refresh_token)
    except SignInRefused as exc:
        request.refusal_audited = True  # audited as auth.login_failed by the service
        return render(request, "auth/oidc_problem.html",
                      {"refused": True, "reason": exc.reason, "oidc_name": settings.OIDC_NAME,
                       "local_login": settings.LOCAL_LOGIN}, status=403)
    login(request, result.user, backend="django.contrib.auth.backends.ModelBackend")
    target = request.session.pop(_NEXT, "") or settings.LOGIN_REDIRECT_URL
    return redirect(target)


# --- group mappings: platform admins ------------------------------------------------------------

def _admin_only(request) -> None:
    if not is_admin(request.user):
        raise PermissionDenied


def _team_names() -> list[str]:
    return list(Team.objects.order_by("name").values_list("name", flat=True))


@login_required
@require_http_methods(["GET", "POST"])
def group_mapping_list(request):
    """The mappings, and a form to add one."""
    _admin_only(request)
    form = GroupMappingForm(request.POST or None, teams=_team_names())
    if request.method == "POST" and form.is_valid():
        try:
            mapping = mapping_create(actor=request.user, actor_ip=client_ip(request), **form.cleaned_data)
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Group {mapping.group} mapped.")
            return redirect("group-mapping-list")
    return render(request, "identity/mappings.html",
                  {"mappings": group_mappings(), "form": form, "oidc_enabled": oidc.enabled(),
                   "oidc_issuer": settings.OIDC_ISSUER, "groups_claim": settings.OIDC_GROUPS_CLAIM,
                   "group_map_file": settings.OIDC_GROUP_MAP},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def group_mapping_edit(request, pk: int):
    _admin_only(request)
    mapping = get_object_or_404(GroupMapping.objects.select_related("team"), pk=pk)
    initial = {"group": mapping.group, "team": mapping.team.name if mapping.team_id else "",
               "team_role": mapping.team_role, "persona": mapping.persona}
    form = GroupMappingForm(request.POST or None, initial=initial, teams=_team_names())
    if request.method == "POST" and form.is_valid():
        try:
            mapping_update(actor=request.user, mapping=mapping, actor_ip=client_ip(request), **form.cleaned_data)
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Mapping of {form.cleaned_data['group']} saved.")
            return redirect("group-mapping-list")
    return render(request, "identity/mapping_edit.html", {"mapping": mapping, "form": form},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def group_mapping_delete(request, pk: int):
    _admin_only(request)
    mapping = get_object_or_404(GroupMapping, pk=pk)
    mapping_delete(actor=request.user, mapping=mapping, actor_ip=client_ip(request))
    messages.success(request, f"Mapping of {mapping.group} deleted: its members lose what it gave at their next "
                              "sign-in.")
    return redirect("group-mapping-list")
