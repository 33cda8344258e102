"""Account pages: one's own API tokens, TOTP enrolment and sign-in step, password change; and the
platform admin's users page with the offboarding preview and confirmation.

Who may do what: every signed-in user manages only their own tokens, authenticator and password;
platform admins also see every user, revoke anyone's tokens and offboard users (never themselves).
The services check the same rules again (portal/services/tokens.py, mfa.py, offboarding.py).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.errors import DomainError
from portal.forms.account import CodeForm, OffboardForm, PasswordChangeForm, TokenCreateForm
from portal.models import ApiToken
from portal.personas import is_admin
from portal.selectors.tokens import token_list_for, token_status, user_list_for_admin
from portal.services import mfa
from portal.services.auth import client_ip
from portal.services.offboarding import offboard, preview
from portal.services.tokens import default_days, max_days, token_create, token_revoke

TOKENS_SHOWN = 200


def _tokens_context(request, form, created=None):
    tokens = list(token_list_for(request.user, username=request.user.username)[:TOKENS_SHOWN])
    for token in tokens:
        token.status = token_status(token)
    return {"tokens": tokens, "form": form, "created": created, "default_days": default_days(),
            "max_days": max_days()}


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request):
    """Own tokens; POST creates one and shows its text once, on this answer only."""
    form = TokenCreateForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            token, key = token_create(user=request.user, name=form.cleaned_data["name"],
                                      expires_in_days=form.cleaned_data.get("expires_in_days"),
                                      actor_ip=client_ip(request))
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            created = {"token": token, "key": key}
            form = TokenCreateForm()
    response = render(request, "account/tokens.html", _tokens_context(request, form, created),
                      status=400 if form.errors else 200)
    response["Cache-Control"] = "no-store"  # the one answer holding the token's text
    return response


@login_required
@require_POST
def token_revoke_view(request, pk: int):
    token = get_object_or_404(ApiToken.objects.restrict(request.user).select_related("user"), pk=pk)
    try:
        token_revoke(token=token, actor=request.user, actor_ip=client_ip(request))
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Token {token.name} revoked.")
    if token.user_id != request.user.pk:
        return redirect("user-offboard", pk=token.user_id)
    return redirect("token-list")


@login_required
@require_http_methods(["GET", "POST"])
def mfa_enrol(request):
    """Enrol an authenticator (QR code, then a code to confirm; recovery codes shown once), or see
    and remove the enrolled one (a current code proves it is you)."""
    device = mfa.mfa_device(request.user)
    form = CodeForm(request.POST or None)
    context = {"form": form, "device": device, "required": mfa.mfa_required(request.user),
               "forced": request.session.get(mfa.SESSION_KEY) == mfa.ENROL}
    if device is None:
        starting = request.POST.get("action") == "start"
        if request.method == "POST" and not starting and form.is_valid():
            try:
                codes = mfa.mfa_enrol_confirm(request=request, code=form.cleaned_data["code"],
                                              actor_ip=client_ip(request))
            except DomainError as exc:
                form.add_domain_error(exc)
            else:
                response = render(request, "account/mfa_codes.html", {"codes": codes})
                response["Cache-Control"] = "no-store"
                return response
        pending = None if starting else mfa.mfa_pending_device(request.user)
        if pending is None:
            pending = mfa.mfa_enrol_start(request.user)
        context.update(form=form, qr_svg=mfa.mfa_qr_svg(pending), secret=mfa.mfa_secret_text(pending))
    elif request.method == "POST" and form.is_valid():
        try:
            mfa.mfa_remove(request=request, code=form.cleaned_data["code"], actor_ip=client_ip(request))
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, "Authenticator removed.")
            return redirect("mfa-enrol")
    response = render(request, "account/mfa.html", context, status=400 if form.errors else 200)
    response["Cache-Control"] = "no-store"  # the secret is on the page while enrolling
    return response


@login_required
@require_http_methods(["GET", "POST"])
def mfa_verify(request):
    """The sign-in's second step: the code of the authenticator (or a recovery code)."""
    if request.session.get(mfa.SESSION_KEY) != mfa.PENDING:
        return redirect("home")
    form = CodeForm(request.POST or None)
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if request.method == "POST" and form.is_valid():
        if mfa.mfa_verify_session(request=request, code=form.cleaned_data["code"], actor_ip=client_ip(request)):
            safe = url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                   require_https=request.is_secure())
            return redirect(wanted if wanted and safe else "home")
        request.refusal_audited = True  # audited as auth.mfa_failed
        form.add_error("code", "That code is not right. Check the time on your device and try again.")
    return render(request, "account/mfa_verify.html", {"form": form, "next": wanted},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def password_change_view(request):
    form = PasswordChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            mfa.password_change(request=request, old_password=form.cleaned_data["old_password"],
                                new_password=form.cleaned_data["new_password"], actor_ip=client_ip(request))
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, "Password changed. Your other sessions have ended.")
            return redirect("password-change")
    return render(request, "account/password.html", {"form": form}, status=400 if form.errors else 200)


# --- platform admins: users and offboarding ----------------------------------------------------

def _admin_only(request) -> None:
    if not is_admin(request.user):
        raise PermissionDenied


@login_required
@require_GET
def user_list(request):
    _admin_only(request)
    return render(request, "account/users.html", {"users": user_list_for_admin()[:1000]})


@login_required
@require_http_methods(["GET", "POST"])
def user_offboard(request, pk: int):
    """The preview of what offboarding the user revokes, and the confirmation that does it."""
    _admin_only(request)
    user = get_object_or_404(get_user_model(), pk=pk)
    form = OffboardForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = offboard(user, actor=request.user, reason=form.cleaned_data["reason"],
                              actor_ip=client_ip(request))
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            counts = result.counts
            messages.success(request, f"{user.username} offboarded: {counts['login_roles_disabled']} login roles "
                                      f"disabled, {counts['grants_revoked']} grants revoked, "
                                      f"{counts['requests_cancelled']} requests cancelled, "
                                      f"{counts['tokens_revoked']} tokens revoked.")
            return redirect("user-offboard", pk=user.pk)
    found = preview(user)
    tokens = list(token_list_for(request.user, username=user.username)[:TOKENS_SHOWN])
    for token in tokens:
        token.status = token_status(token)
    return render(request, "account/offboard.html",
                  {"subject": user, "preview": found, "form": form, "tokens": tokens,
                   "self": user.pk == request.user.pk}, status=400 if form.errors else 200)
