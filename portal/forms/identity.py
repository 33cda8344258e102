"""Form of the group-mapping page: one identity-provider group → a team (member / lead) or a persona."""

from django import forms

from portal.choices import MembershipRole, Persona
from portal.forms.base import PortalForm


class GroupMappingForm(PortalForm):
    group = forms.CharField(max_length=200, help_text="The group's name exactly as the provider sends it in the "
                                                      "groups claim (Entra ID sends object ids).")
    team = forms.ChoiceField(required=False, help_text="Members of the group join this team…")
    team_role = forms.ChoiceField(choices=[("", "—"), *MembershipRole.choices], required=False, label="Role in the team",
                                  help_text="Leads approve access to the team's schemas.")
    persona = forms.ChoiceField(choices=[("", "—"), *Persona.choices], required=False,
                                help_text="…or get this persona (choose a team or a persona, not both).")

    def __init__(self, *args, teams: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "—"), *[(t, t) for t in teams or []]]
