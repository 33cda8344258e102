"""Rows the provisioning engine keeps: the dispatch outbox, one-time secrets, drift findings."""

from django.db import models

from portal.choices import DriftKind, DriftStatus
from portal.querysets import RestrictedQuerySet


class OutboxMessage(models.Model):
    """A task to send, committed in the same transaction as the change that calls for it."""

    task_name = models.CharField(max_length=100)
    request = models.ForeignKey("portal.ChangeRequest", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    args = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    send_count = models.PositiveIntegerField(default=0)
    # Set when a worker takes the work; the sweeper re-sends only rows no worker has taken.
    taken_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="outbox_pending_idx", condition=models.Q(taken_at__isnull=True))]


class RequestSecret(models.Model):
    """A generated password, encrypted until its requester reveals it once; then wiped."""

    request = models.OneToOneField("portal.ChangeRequest", on_delete=models.CASCADE, related_name="secret")
    role = models.CharField(max_length=63)
    encrypted = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revealed_at = models.DateTimeField(null=True, blank=True)
    wiped_at = models.DateTimeField(null=True, blank=True)


class DriftFinding(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="drift_findings")
    database = models.CharField(max_length=63, blank=True)
    kind = models.CharField(max_length=24, choices=DriftKind.choices)
    role = models.CharField(max_length=63)
    object_type = models.CharField(max_length=20, blank=True)  # schema | table | default | role
    object_name = models.CharField(max_length=200, blank=True)
    privilege = models.CharField(max_length=40, blank=True)
    detail = models.TextField(blank=True)
    status = models.CharField(max_length=14, choices=DriftStatus.choices, default=DriftStatus.OPEN)
    detected_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)
    acknowledged_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    @staticmethod
    def restrict_policy(qs, user, action):
        return qs.none()  # reviewers, auditors and admins only (handled by restrict())

    class Meta:
        ordering = ["-detected_at"]


class ReplicationCredential(models.Model):
    """The password of the portal's own replication role on one primary, encrypted at rest.

    The role (provisioning.replicas.local.REPLICATION_ROLE) is the only one that ever gets
    REPLICATION; its standbys read the password from a 0600 passfile next to their data.
    """

    instance = models.OneToOneField("portal.Instance", on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=63)
    password_encrypted = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    @property
    def password(self) -> str:
        from portal.crypto import decrypt

        return decrypt(self.password_encrypted)

    @password.setter
    def password(self, value: str) -> None:
        from portal.crypto import encrypt

        self.password_encrypted = encrypt(value)


class PortalIdentity(models.Model):
    """This portal's name in the applied-change markers it writes on clusters (one row).

    Kept in the portal database, not derived from how it is reached, so it moves with a backup:
    a portal restored under another database name or host still finds its own markers and does
    not apply a committed plan twice. Not a managed model: `flush` (and every transactional
    test) leaves the row alone; the table is created by migration 0003.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.CharField(max_length=64)

    class Meta:
        managed = False
        db_table = "provisioning_portal_identity"
