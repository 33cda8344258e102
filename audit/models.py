"""AuditEvent (append-only, hash-chained) and the head row that serialises appends."""

from django.db import models


class AuditEvent(models.Model):
    seq = models.BigIntegerField(primary_key=True)  # gap-free, ascending; assigned under the head lock
    ts = models.DateTimeField()
    actor = models.CharField(max_length=150)  # username or "system"
    actor_ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    instance = models.CharField(max_length=63, blank=True)
    database = models.CharField(max_length=63, blank=True)
    statement = models.TextField(blank=True)
    request_id = models.BigIntegerField(null=True, blank=True)
    approvers = models.JSONField(default=list)
    outcome = models.CharField(max_length=20, blank=True)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["ts"], name="audit_ts_idx"),
            models.Index(fields=["action", "seq"], name="audit_action_idx"),
            models.Index(fields=["actor", "seq"], name="audit_actor_idx"),
            models.Index(fields=["request_id"], name="audit_request_idx"),
            models.Index(fields=["instance", "seq"], name="audit_instance_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.seq} {self.action} by {self.actor}"


class AuditHead(models.Model):
    """A single row: the last seq and hash. Locking it serialises appends cheaply."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)


# Forwarding to SIEM collectors keeps its own table (audit/siem_models.py); imported here so Django finds it.
from audit.siem_models import SiemCursor  # noqa: E402

__all__ = ["AuditEvent", "AuditHead", "SiemCursor"]

# Monthly archives of the log (audit/archive.py) keep their manifest rows in audit/archive_models.py.
from audit.archive_models import AuditArchive  # noqa: E402, F401
