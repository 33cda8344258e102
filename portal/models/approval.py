"""A reviewer's decision on a request, bound to the plan hash they saw."""

from django.conf import settings
from django.db import models

from portal.choices import Decision


class Approval(models.Model):
    request = models.ForeignKey("portal.ChangeRequest", on_delete=models.CASCADE, related_name="approvals")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approvals")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    plan_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # One decision per person on a given plan; a re-rendered plan may be reviewed again.
            models.UniqueConstraint(fields=["request", "reviewer", "plan_hash"], name="approval_once_per_plan"),
        ]
