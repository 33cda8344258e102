"""Teams and who belongs to them."""

from django.conf import settings
from django.db import models

from portal.choices import MembershipRole
from portal.querysets import RestrictedQuerySet


class Team(models.Model):
    name = models.SlugField(max_length=63, unique=True)
    description = models.CharField(max_length=300, blank=True)
    # Notifications of request transitions are POSTed here as JSON, when set.
    webhook_url = models.URLField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()
    team_path = "self"

    class Meta:
        ordering = ["name"]
        permissions = [("lead_team", "Lead the team: approve access to its schemas")]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def restrict_policy(qs, user, action):
        if action == "view":
            return qs.filter(memberships__user=user).distinct()
        return qs.none()


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=MembershipRole.choices, default=MembershipRole.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"
