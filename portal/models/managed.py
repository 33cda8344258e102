"""The portal's record of what it created on clusters: the desired state drift is checked against."""

from django.db import models

from portal.querysets import RestrictedQuerySet


class ManagedSchema(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="managed_schemas")
    database = models.CharField(max_length=63)
    name = models.CharField(max_length=63)
    owner_role = models.CharField(max_length=63)
    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="schemas")
    request = models.ForeignKey("portal.ChangeRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()
    team_path = "team"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "database", "name"], name="managed_schema_unique")]

    def __str__(self) -> str:
        return f"{self.instance}/{self.database}/{self.name}"


class ManagedRole(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="managed_roles")
    name = models.CharField(max_length=63)
    login = models.BooleanField(default=False)
    member_of = models.JSONField(default=list)
    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="roles")
    request = models.ForeignKey("portal.ChangeRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    dropped_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()
    team_path = "team"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "name"], name="managed_role_unique")]

    def __str__(self) -> str:
        return f"{self.instance}/{self.name}"


class Grant(models.Model):
    """Privileges the portal granted (one row per applied grant request)."""

    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="grants")
    database = models.CharField(max_length=63)
    schema = models.CharField(max_length=63)
    role = models.CharField(max_length=63)
    privileges = models.JSONField(default=list)
    tables = models.JSONField(default=list, help_text='"all" or a list of table names')
    default_privileges = models.BooleanField(default=False)
    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="grants")
    request = models.ForeignKey("portal.ChangeRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="grants")
    granted_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        "portal.ChangeRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="revoked_grants"
    )

    objects = RestrictedQuerySet.as_manager()
    team_path = "team"

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="grant_expiry_idx", condition=models.Q(revoked_at__isnull=True))]

    def __str__(self) -> str:
        return f"{','.join(self.privileges)} on {self.database}.{self.schema} to {self.role}"
