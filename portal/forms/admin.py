"""Forms of the admin pages: teams, members, approval policies."""

from django import forms

from portal.choices import MembershipRole, Persona
from portal.forms.base import PortalForm


class TeamCreateForm(PortalForm):
    name = forms.CharField(max_length=63, help_text="Lower-case letters, digits and '-', e.g. payments.")
    description = forms.CharField(max_length=300, required=False, help_text="What the team does (optional).")
    webhook_url = forms.URLField(required=False, label="Webhook URL", assume_scheme="https",
                                 help_text="Request transitions are POSTed here as JSON (optional); the host must be inside "
                                           "PORTAL_ALLOWED_TARGETS, and redirects are not followed.")


class MemberAddForm(PortalForm):
    username = forms.CharField(max_length=150, help_text="The user's sign-in name.")
    role = forms.ChoiceField(choices=MembershipRole.choices, initial=MembershipRole.MEMBER,
                             help_text="Leads approve access to the team's schemas.")

    def __init__(self, *args, usernames: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if usernames:
            self.fields["username"].widget.attrs["list"] = "usernames"
        self.usernames = usernames or []


class PolicyForm(PortalForm):
    approvals_required = forms.IntegerField(min_value=0, max_value=5, label="Approvals required",
                                            help_text="Distinct reviewers; never the requester.")
    approver_groups = forms.MultipleChoiceField(choices=Persona.choices, widget=forms.CheckboxSelectMultiple,
                                                required=False, label="Approver groups",
                                                help_text="Members of any of these groups may approve.")
    require_owner_lead = forms.BooleanField(required=False, label="Also the lead of the schema's owning team",
                                            help_text="For cross-team revokes; a grant into another team's "
                                                      "schema always needs that team's lead.")
    auto_approve = forms.BooleanField(required=False, label="Approve automatically",
                                      help_text="Only allowed for low-risk changes in dev.")
