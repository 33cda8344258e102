"""A change set: the requests one `dbportal apply` of a desired-state file filed together.

Reviewers see and approve them together; each request keeps its own plan, hash, approvals and
audit trail (portal/services/change_sets.py).
"""

from django.conf import settings
from django.db import models


class ChangeSet(models.Model):
    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="change_sets")
    instance = models.ForeignKey("portal.Instance", on_delete=models.PROTECT, related_name="change_sets")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="change_sets")
    created_at = models.DateTimeField(auto_now_add=True)
    justification = models.TextField()
    source = models.CharField(max_length=200, blank=True, help_text="the file's name, as the client gave it")
    document_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the desired state as filed (JSON)")
    document = models.JSONField(default=dict)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"change set #{self.pk}"


class ChangeSetItem(models.Model):
    change_set = models.ForeignKey(ChangeSet, on_delete=models.CASCADE, related_name="items")
    request = models.OneToOneField("portal.ChangeRequest", on_delete=models.PROTECT, related_name="change_set_item")
    position = models.PositiveSmallIntegerField()
    op = models.CharField(max_length=6, choices=[("add", "add"), ("remove", "remove")])

    class Meta:
        ordering = ["change_set", "position"]
        constraints = [models.UniqueConstraint(fields=["change_set", "position"], name="change_set_item_position")]
