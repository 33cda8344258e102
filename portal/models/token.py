"""API tokens: per user, named, expiring, revocable; only a SHA-256 digest is kept.

The token itself (`dbp_` + 43 URL-safe characters, 256 bits) is shown once when it is made.
Authentication hashes what the client presents and looks the digest up (portal/api/authentication.py);
`prefix` (the first characters) lets a person tell their tokens apart in lists without the secret.
Whose tokens a user may see: their own; platform admins see everyone's (to revoke them).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from portal.personas import is_admin
from portal.querysets import RestrictedQuerySet


class ApiTokenQuerySet(RestrictedQuerySet):
    def restrict(self, user, action="view"):
        if not getattr(user, "is_authenticated", False):
            return self.none()
        if is_admin(user):
            return self
        # Reviewers and auditors "see everything" elsewhere, but a token belongs to one person.
        return self.filter(user=user)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)  # SHA-256 hex of the whole token
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A name names one token among a user's unrevoked ones.
            models.UniqueConstraint(fields=["user", "name"], condition=Q(revoked_at__isnull=True),
                                    name="api_token_name_unique"),
        ]
        indexes = [models.Index(fields=["user", "-id"], name="api_token_user_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
