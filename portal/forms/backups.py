"""The backup policy form of an instance's backups page (issue #20); the rules are the service's."""

from __future__ import annotations

import json

from django import forms

from portal.models.backup import BackupMethod, TeamCheckExpect


class BackupPolicyForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    method = forms.ChoiceField(choices=BackupMethod.choices)
    interval_hours = forms.FloatField(min_value=0.25, max_value=24 * 366, label="Backup every (hours)")
    retention_count = forms.IntegerField(min_value=1, max_value=1000, label="Keep at least (backups)")
    retention_days = forms.FloatField(min_value=0.01, max_value=3660, label="Delete older than (days)")
    drill_interval_hours = forms.FloatField(min_value=0, max_value=24 * 366, label="Drill every (hours, 0 = never)")
    check_queries = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "class": "font-monospace"}),
                                    help_text='JSON: [{"name": "orders", "database": "app", "sql": "SELECT count(*) > 0 '
                                              'FROM orders"}]')

    def clean_check_queries(self) -> list:
        text = self.cleaned_data["check_queries"].strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None
        if not isinstance(value, list):
            raise forms.ValidationError("a JSON list of queries")
        return value

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if name == "method":
                field.widget.attrs["class"] = "form-select form-select-sm"
            elif name != "enabled":
                field.widget.attrs["class"] = " ".join(filter(None, ["form-control form-control-sm",
                                                                     field.widget.attrs.get("class")]))


class TeamCheckForm(forms.Form):
    """A team's drill check (create: with team and database; change: the rest). Rules: the service's."""

    team = forms.CharField(max_length=63, required=False)
    database = forms.CharField(max_length=63, required=False)
    name = forms.CharField(max_length=63)
    sql = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3, "class": "font-monospace"}),
                          help_text="One SELECT over your team's schemas, schema-qualified: "
                                    "SELECT count(*) > 0 FROM payments.orders")
    expect = forms.ChoiceField(choices=TeamCheckExpect.choices)
    expected = forms.CharField(max_length=200, required=False, help_text="for equals: true/false, null, a number, text")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            css = "form-select form-select-sm" if name == "expect" else "form-control form-control-sm"
            field.widget.attrs["class"] = " ".join(filter(None, [css, field.widget.attrs.get("class")]))
