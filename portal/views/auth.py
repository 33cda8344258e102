"""Sign-in and sign-out: Django's views with every attempt and every sign-out audited."""

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.db import transaction
from django.shortcuts import redirect

from portal.services import mfa, oidc
from portal.services.auth import LocalLoginOff, login_attempt, logout_record


class AuditedAuthenticationForm(AuthenticationForm):
    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = login_attempt(request=self.request, username=username, password=password,
                                                channel="web")
            except LocalLoginOff as exc:  # PORTAL_LOCAL_LOGIN=off: refused (and audited) whatever the password
                raise forms.ValidationError(exc.detail, code="local_login_off") from None
            if self.user_cache is None:
                raise forms.ValidationError(self.error_messages["invalid_login"], code="invalid_login",
                                            params={"username": self.username_field.verbose_name})
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class PortalLoginView(LoginView):
    template_name = "auth/login.html"
    authentication_form = AuditedAuthenticationForm
    redirect_authenticated_user = True
    # FormView would take PUT as a sign-in too; the form posts, nothing else does.
    http_method_names = ["get", "post", "head", "options"]

    def form_valid(self, form):
        """Signed in with the password; a second factor may still be owed (portal/services/mfa.py):
        the session then reaches only the code or enrolment page until it is given."""
        response = super().form_valid(form)
        state = mfa.mfa_state_for_sign_in(form.get_user())
        self.request.session[mfa.SESSION_KEY] = state
        if state == mfa.PENDING:
            verify = redirect("mfa-verify")
            verify["Location"] += "?" + urlencode({"next": self.get_success_url()})
            return verify
        if state == mfa.ENROL:
            return redirect("mfa-enrol")
        return response

    def get_context_data(self, **kwargs):
        # The page offers single sign-on when configured, and the password form unless switched off.
        return {**super().get_context_data(**kwargs), "local_login": settings.LOCAL_LOGIN,
                "oidc_enabled": oidc.enabled(), "oidc_name": settings.OIDC_NAME}



class PortalLogoutView(LogoutView):
    def post(self, request, *args, **kwargs):
        with transaction.atomic():
            logout_record(request=request)
        return super().post(request, *args, **kwargs)
