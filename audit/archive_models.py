"""AuditArchive: the manifest row of one month of the audit log exported to an archive file.

A row is written only after its file was verified (audit/archive.py); the rows are append-only
but for their state columns, which only ever go from empty to set (detached_at, deleted_at),
and the audit table's delete guard (migration audit/0004) lets a row of audit_auditevent go only
when its seq lies in the range of a verified archive that is not yet deleted.
"""

from django.db import models


class AuditArchive(models.Model):
    period = models.CharField(max_length=7, unique=True)  # "YYYY-MM", the UTC calendar month
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    count = models.BigIntegerField()
    first_ts = models.DateTimeField()
    last_ts = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)  # the prev_hash of the first event
    last_hash = models.CharField(max_length=64)  # the hash of the last event
    file_name = models.CharField(max_length=100)  # inside settings.AUDIT_ARCHIVE_DIR
    sha256 = models.CharField(max_length=64)  # of the archive file
    size_bytes = models.BigIntegerField()
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150)
    verified_at = models.DateTimeField()
    retain_until = models.DateTimeField()  # the first moment the archive may be deleted
    detached_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["first_seq"]
        constraints = [
            models.UniqueConstraint(fields=["first_seq"], name="audit_archive_first_seq_uniq"),
            models.CheckConstraint(condition=models.Q(last_seq__gte=models.F("first_seq")),
                                   name="audit_archive_range_ck"),
        ]

    def __str__(self) -> str:
        return f"{self.period} seq {self.first_seq}-{self.last_seq}"

    @property
    def status(self) -> str:
        if self.deleted_at is not None:
            return "deleted"
        if self.detached_at is not None:
            return "detached"
        return "archived"
