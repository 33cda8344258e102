from django import forms

from portal.choices import Environment
from portal.forms.base import PortalForm


class InstanceRegisterForm(PortalForm):
    name = forms.SlugField(max_length=63, help_text="Short unique name, e.g. payments-prod.")
    environment = forms.ChoiceField(choices=Environment.choices, help_text="prod changes need more approvals.")
    host = forms.CharField(max_length=255, help_text="Host name or IP; must be inside PORTAL_ALLOWED_TARGETS.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=5432)
    database = forms.CharField(max_length=63, initial="postgres", help_text="Maintenance database.")
    admin_user = forms.CharField(max_length=63, help_text="A superuser or a role with CREATEROLE.")
    admin_password = forms.CharField(
        max_length=1024, required=False, strip=False, widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted; never shown again.",
    )
