"""Sign-in and sign-out: Django's views with every attempt and every sign-out audited."""

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.db import transaction

from portal.services.auth import login_attempt, logout_record


class AuditedAuthenticationForm(AuthenticationForm):
    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            self.user_cache = login_attempt(request=self.request, username=username, password=password, channel="web")
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



class PortalLogoutView(LogoutView):
    def post(self, request, *args, **kwargs):
        with transaction.atomic():
            logout_record(request=request)
        return super().post(request, *args, **kwargs)
