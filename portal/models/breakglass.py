"""Break-glass: emergency grants applied before review, and the per-environment switch.

A break-glass request is a ChangeRequest of type `grant` with `break_glass=True`; its BreakGlass
row keeps the incident reference, the time box and the post-hoc review (portal/services/
breakglass.py). Whether an environment allows it at all is a BreakGlassSetting row.
"""

from django.conf import settings
from django.db import models

from portal.choices import BreakGlassOutcome, Environment

# Environments where break-glass is allowed when no BreakGlassSetting row says otherwise:
# production only once a platform admin switches it on.
BREAK_GLASS_DEFAULT_ENABLED = {Environment.DEV: True, Environment.STAGING: True, Environment.PROD: False}


class BreakGlassSetting(models.Model):
    """Whether break-glass requests are allowed in one environment (missing row: the default above)."""

    environment = models.CharField(max_length=10, choices=Environment.choices, unique=True)
    enabled = models.BooleanField(default=False)
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment"]

    def __str__(self) -> str:
        return f"break-glass in {self.environment}: {'on' if self.enabled else 'off'}"


class BreakGlass(models.Model):
    """The emergency side of one break-glass request: why (the incident), how long, and the
    post-hoc review a reviewer owes it within a day."""

    request = models.OneToOneField("portal.ChangeRequest", on_delete=models.CASCADE, related_name="break_glass_record")
    incident_ref = models.CharField(max_length=40)
    duration_minutes = models.PositiveIntegerField()
    ends_at = models.DateTimeField()
    review_due_at = models.DateTimeField()
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    review_outcome = models.CharField(max_length=12, choices=BreakGlassOutcome.choices, blank=True)
    review_comment = models.TextField(blank=True)
    overdue_notified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["review_due_at"], name="break_glass_review_due_idx",
                                condition=models.Q(reviewed_at__isnull=True))]

    def __str__(self) -> str:
        return f"break-glass #{self.request_id} ({self.incident_ref})"

    @property
    def reviewed(self) -> bool:
        return self.reviewed_at is not None
