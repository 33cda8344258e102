"""The form that opens an access review campaign (the service checks everything again)."""

from __future__ import annotations

from datetime import UTC

from django import forms
from django.contrib.auth.models import User

from portal.choices import Environment, InstanceStatus, UnansweredAction
from portal.forms.base import PortalForm
from portal.models import Instance, Team


class CampaignOpenForm(PortalForm):
    name = forms.CharField(max_length=200, help_text="What auditors will read, e.g. “2026 H2 payments recertification”.")
    instances = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                          help_text="None ticked: every instance (narrowed by the lists below).")
    environments = forms.MultipleChoiceField(choices=Environment.choices, required=False,
                                             widget=forms.CheckboxSelectMultiple)
    teams = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                      help_text="Only privileges these teams own (by schema, else by role).")
    deadline = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                   input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
                                   help_text="UTC. Reminders go out daily before it; the action below runs after it.")
    unanswered_action = forms.ChoiceField(choices=UnansweredAction.choices, widget=forms.RadioSelect,
                                          initial=UnansweredAction.REVOKE, label="Unanswered items at the deadline")
    fallback_certifier = forms.ModelChoiceField(queryset=User.objects.none(), to_field_name="username",
                                                help_text="Certifies privileges no team owns, and those every lead "
                                                          "of the owning team holds themself.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["instances"].choices = [
            (name, name) for name in Instance.objects.exclude(status=InstanceStatus.RETIRED)
            .filter(replica_of__isnull=True).order_by("name").values_list("name", flat=True)]
        self.fields["teams"].choices = [(n, n) for n in Team.objects.order_by("name").values_list("name", flat=True)]
        self.fields["fallback_certifier"].queryset = User.objects.filter(is_active=True).order_by("username")
        self.style_widgets()

    def clean_deadline(self):
        value = self.cleaned_data["deadline"]
        # The field is entered in UTC, as every time on the portal's pages.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
