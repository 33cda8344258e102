"""Forms of the account pages (own API tokens, TOTP, password) and of the admin's offboarding page."""

from django import forms

from portal.forms.base import PortalForm
from portal.services.offboarding import MAX_REASON
from portal.services.tokens import MAX_NAME


class TokenCreateForm(PortalForm):
    name = forms.CharField(max_length=MAX_NAME, help_text="What uses it, e.g. ci-deploy or my laptop.")
    expires_in_days = forms.IntegerField(min_value=1, required=False, label="Expires in (days)",
                                         help_text="Empty: the default lifetime.")


class CodeForm(PortalForm):
    code = forms.CharField(max_length=64, label="Code", help_text="The 6 digits your authenticator app shows, "
                           "or one of your recovery codes.",
                           widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                                         "autofocus": True}))


class PasswordChangeForm(PortalForm):
    old_password = forms.CharField(label="Current password", strip=False,
                                   widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    new_password = forms.CharField(label="New password", strip=False, help_text="At least 12 characters, not a common one.",
                                   widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))


class OffboardForm(PortalForm):
    reason = forms.CharField(max_length=MAX_REASON, help_text="Recorded in the audit log, e.g. left the company.")
    confirm = forms.BooleanField(label="I understand: access is revoked on every instance and the user is deactivated")
