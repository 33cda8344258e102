"""Managed PostgreSQL clusters ("instances") and their inventory."""

from __future__ import annotations

from django.db import models

from portal.choices import Environment, InstanceKind, InstanceStatus
from portal.crypto import decrypt, encrypt
from portal.querysets import RestrictedQuerySet


class Instance(models.Model):
    name = models.SlugField(max_length=63, unique=True)
    environment = models.CharField(max_length=10, choices=Environment.choices, default=Environment.DEV)
    kind = models.CharField(max_length=10, choices=InstanceKind.choices, default=InstanceKind.EXTERNAL)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=5432)
    database = models.CharField(max_length=63, default="postgres", help_text="maintenance database")
    admin_user = models.CharField(max_length=63)
    # MultiFernet token (portal.crypto); never serialised, rendered or logged.
    admin_password_encrypted = models.TextField(blank=True)
    replica_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="replicas")
    status = models.CharField(max_length=12, choices=InstanceStatus.choices, default=InstanceStatus.UNKNOWN)
    status_detail = models.CharField(max_length=500, blank=True)
    server_version = models.CharField(max_length=60, blank=True)
    # local instances only: where the data directory lives
    data_dir = models.CharField(max_length=500, blank=True)
    replica_lag_bytes = models.BigIntegerField(null=True, blank=True)
    replica_lag_seconds = models.FloatField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def restrict_policy(qs, user, action):
        # Every signed-in user may see (not change) the instances, to request against them.
        if action == "view":
            return qs
        return qs.none()

    @property
    def is_replica(self) -> bool:
        return self.replica_of_id is not None

    @property
    def admin_password(self) -> str:
        return decrypt(self.admin_password_encrypted) if self.admin_password_encrypted else ""

    @admin_password.setter
    def admin_password(self, value: str) -> None:
        self.admin_password_encrypted = encrypt(value) if value else ""


class InstanceInventory(models.Model):
    """What the workers last saw on the cluster: databases, schemas (owner, tables), roles.

    Shape: {"databases": {db: {"schemas": {schema: {"owner": role, "tables": [..]}}}},
            "roles": {name: {"login": bool, "superuser": bool, ...}}}
    """

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="inventory")
    snapshot = models.JSONField(default=dict)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    def databases(self) -> list[str]:
        return sorted(self.snapshot.get("databases", {}))

    def schemas(self, database: str) -> dict:
        return self.snapshot.get("databases", {}).get(database, {}).get("schemas", {})

    def roles(self) -> dict:
        return self.snapshot.get("roles", {})
