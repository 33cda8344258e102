"""Single sign-on: which identity-provider groups give which team or persona, and who signed in how."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from portal.choices import MembershipRole, Persona


class GroupMapping(models.Model):
    """One group of the identity provider → one team (as member or lead) or one persona.

    A group may have several rows (a team and a persona, two teams). The mapping is authoritative
    at every sign-in for the teams and personas it names (docs/identity.md). Platform admins
    alone read and change it (the page and the API check the persona; no other scope exists).
    """

    group = models.CharField(max_length=200)
    team = models.ForeignKey("portal.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="group_mappings")
    team_role = models.CharField(max_length=10, choices=MembershipRole.choices, blank=True, default="")
    persona = models.CharField(max_length=20, choices=Persona.choices, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["group", "id"]
        constraints = [
            # Exactly one target: a team with a role, or a persona.
            models.CheckConstraint(
                condition=(Q(team__isnull=False) & ~Q(team_role="") & Q(persona=""))
                | (Q(team__isnull=True) & Q(team_role="") & ~Q(persona="")),
                name="group_mapping_one_target"),
            models.UniqueConstraint(fields=["group", "team"], condition=Q(team__isnull=False),
                                    name="group_mapping_unique_team"),
            models.UniqueConstraint(fields=["group", "persona"], condition=~Q(persona=""),
                                    name="group_mapping_unique_persona"),
        ]

    def __str__(self) -> str:
        target = f"team {self.team} ({self.team_role})" if self.team_id else f"persona {self.persona}"
        return f"{self.group} → {target}"


class IdentityLink(models.Model):
    """A portal user who signs in through the identity provider: its (issuer, subject), stable
    where names are not, and the groups it last presented."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identity_link")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    last_sign_in = models.DateTimeField(null=True, blank=True)
    # The periodic check (PORTAL_OIDC_CHECK_MINUTES): the provider's refresh token, encrypted at rest
    # (portal.crypto, PORTAL_FERNET_KEYS), and when the provider last answered for this user.
    refresh_token_encrypted = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="identity_link_unique_subject")]

    def __str__(self) -> str:
        return f"{self.user} = {self.subject} at {self.issuer}"
