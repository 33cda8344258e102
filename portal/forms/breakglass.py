"""The break-glass form: a grant for an incident, with its duration (portal/services/breakglass.py decides)."""

from __future__ import annotations

from typing import Any

from django import forms

from portal.choices import BREAK_GLASS_PRIVILEGES, BreakGlassOutcome
from portal.forms.base import PortalForm
from portal.models import Instance, Team


class BreakGlassForm(PortalForm):
    """Fields named as the service's errors name them, so each error lands next to its field."""

    instance = forms.ModelChoiceField(queryset=Instance.objects.none(), label="Instance",
                                      help_text="only where break-glass is switched on for the environment")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), label="Team",
                                  help_text="your team; the schema must be one of its own")
    role = forms.CharField(max_length=63, label="Role", help_text="the team's role that gets the access")
    database = forms.CharField(max_length=63, label="Database")
    schema = forms.CharField(max_length=63, label="Schema")
    privileges = forms.MultipleChoiceField(choices=[(p, p) for p in BREAK_GLASS_PRIVILEGES],
                                           widget=forms.CheckboxSelectMultiple, label="Privileges",
                                           help_text="data only: no CREATE, TRIGGER, REFERENCES or TRUNCATE")
    incident_ref = forms.CharField(max_length=40, required=False, label="Incident reference",
                                   help_text="e.g. INC-1234 or a PagerDuty id such as P1A2B3C")
    duration_minutes = forms.IntegerField(min_value=1, label="Duration (minutes)",
                                          help_text="the grant is revoked by itself at the end")
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=5000, required=False,
                                    label="Justification", help_text="what you need to do, for the reviewers")

    def __init__(self, *args: Any, user: Any, max_minutes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["instance"].queryset = Instance.objects.restrict(user, "view").exclude(status="retired")
        self.fields["team"].queryset = Team.objects.filter(memberships__user=user)
        self.fields["duration_minutes"].max_value = max_minutes
        self.fields["duration_minutes"].widget.attrs["max"] = max_minutes
        self.fields["duration_minutes"].help_text += f" (at most {max_minutes} minutes)"
        self.fields["privileges"].initial = ["SELECT"]

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        return {"type": "grant", "instance": data["instance"], "team": data["team"],
                "justification": data["justification"], "incident_ref": data["incident_ref"],
                "duration_minutes": data["duration_minutes"],
                "payload": {"role": data["role"], "database": data["database"], "schema": data["schema"],
                            "privileges": list(data["privileges"]), "tables": "all"}}


class BreakGlassReviewForm(PortalForm):
    outcome = forms.ChoiceField(choices=BreakGlassOutcome.choices)
    comment = forms.CharField(max_length=5000)
