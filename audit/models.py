"""AuditEvent (append-only, hash-chained) and the head row that serialises appends."""

from collections.abc import Callable

from django.db import models

# Set by audit/chainer.py when it is imported (it imports this module, not the other way round):
# called before every read through AuditEvent.objects.
before_read: Callable[[], object] | None = None


class ChainedReadManager(models.Manager):
    """Reads chain first what this process recorded and nobody chained yet (audit/chainer.py), so
    code that reads the log or its head right after recording, inside the same transaction (where
    on_commit has not fired), sees final seqs in recording order. No query when nothing is pending
    here."""

    def get_queryset(self) -> models.QuerySet:
        if before_read is not None:
            before_read()
        return super().get_queryset()


class AuditEvent(models.Model):
    # Gap-free and ascending from 1 once chained (audit/chainer.py, under the head lock); a pending
    # event, recorded but not chained yet, holds a negative placeholder (PENDING_BASE + n).
    seq = models.BigIntegerField(primary_key=True)
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
    prev_hash = models.CharField(max_length=64)  # "" while pending (seq < 0, not chained yet)
    hash = models.CharField(max_length=64)  # HMAC-SHA256 under key_id (plain SHA-256 when key_id is "")
    key_id = models.CharField(max_length=16, blank=True, db_default="")  # audit/keys.py
    # What the hash covers (audit/chain.py): 1, the canonical JSON form (events chained before
    # migration 0009); 2, the event's COPY line. Set by the chainer with the hash.
    chain_format = models.SmallIntegerField(db_default=1)

    objects = ChainedReadManager()

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


class RecordedEvent(AuditEvent):
    """What audit.services.record() returns: the event as stored, whose `seq` is assigned lazily.

    A pending event holds a negative placeholder seq until the chainer runs (audit/chainer.py);
    reading `.seq` of a pending event this process recorded chains first (in this connection, so
    also inside the transaction that recorded it) and then gives the final seq."""

    class Meta:
        proxy = True

    @property
    def seq(self) -> int | None:
        value = self.__dict__.get("seq")
        if value is not None and value < 0 and before_read is not None:
            before_read()  # the chainer sets the final seq on this object (audit.chainer._settle)
            value = self.__dict__.get("seq")
        return value

    @seq.setter
    def seq(self, value: int | None) -> None:
        self.__dict__["seq"] = value


class AuditHead(models.Model):
    """A single row: the last seq and hash. Locking it serialises appends cheaply."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16, blank=True, db_default="")  # the key of the event at seq
    # Where the chainer's pending scan starts (audit/chainer.py, "the pending bound"): no pending event,
    # committed or still to commit, has a placeholder below pending_from. NULL: from the first one.
    pending_from = models.BigIntegerField(null=True)
    # The next bound, once every transaction running when it was taken has ended: the last placeholder
    # handed out then, and the first transaction id not yet assigned just after.
    mark_placeholder = models.BigIntegerField(null=True)
    mark_xid = models.BigIntegerField(null=True)

    objects = ChainedReadManager()


# Forwarding to SIEM collectors keeps its own table (audit/siem_models.py); imported here so Django finds it.
from audit.siem_models import SiemCursor  # noqa: E402

__all__ = ["AuditEvent", "AuditHead", "SiemCursor"]

# Monthly archives of the log (audit/archive.py) keep their manifest rows in audit/archive_models.py.
from audit.archive_models import AuditArchive  # noqa: E402, F401
