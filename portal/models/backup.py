"""Backups and restore drills of managed instances (issue #20): policy, catalog, drill history.

A BackupPolicy says how one instance is backed up: physical (pg_basebackup with its manifest,
plus continuous WAL archiving) for `local` instances, logical (pg_dump -Fc per database and the
globals without passwords) for `external` ones; how often, how many and how old backups are
kept, and how often a restore drill proves them. Only platform admins change a policy
(portal/services/backups.py); everyone signed in may read it, the catalog and the drills.

A Backup row is `running` from the moment the worker starts and becomes `ok` only after the
files were written, their checksum taken and the manifest verified (pg_verifybackup, or
pg_restore --list for dumps): a worker killed halfway leaves `running`, which the sweep turns
into `failed`. Nothing else ever claims success.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.querysets import RestrictedQuerySet


class BackupMethod(models.TextChoices):
    PHYSICAL = "physical", "physical (pg_basebackup + WAL archive)"
    LOGICAL = "logical", "logical (pg_dump -Fc + globals)"


class BackupState(models.TextChoices):
    RUNNING = "running", "running"
    OK = "ok", "ok"
    FAILED = "failed", "failed"


class BackupHealth(models.TextChoices):
    UNKNOWN = "unknown", "no backup yet"
    OK = "ok", "ok"
    FAILED = "failed", "failed"
    LATE = "late", "late"


class DrillState(models.TextChoices):
    RUNNING = "running", "running"
    PASSED = "passed", "passed"
    FAILED = "failed", "failed"


class DrillTrigger(models.TextChoices):
    SCHEDULED = "scheduled", "scheduled"
    ON_DEMAND = "on_demand", "on demand"


def _everyone_reads(qs, user, action):
    # Instances are visible to every signed-in user; so are their backups and drills (names,
    # sizes, times: no data). Changes go through the services, which check the persona.
    return qs if action == "view" else qs.none()


class BackupPolicy(models.Model):
    instance = models.OneToOneField("portal.Instance", on_delete=models.CASCADE, related_name="backup_policy")
    enabled = models.BooleanField(default=True)
    method = models.CharField(max_length=10, choices=BackupMethod.choices)
    interval_hours = models.FloatField(default=24.0, help_text="a backup every this many hours")
    retention_count = models.PositiveIntegerField(default=7, help_text="keep at least this many good backups")
    retention_days = models.FloatField(default=14.0, help_text="delete good backups older than this (beyond the count)")
    drill_interval_hours = models.FloatField(default=168.0, help_text="a restore drill every this many hours; 0 = none")
    # [{"name": .., "database": .., "sql": ..}] run read-only in each drill against the restored copy.
    check_queries = models.JSONField(default=list, blank=True)
    # Health of the backups, for the instance's page, /healthz and the alerts.
    health = models.CharField(max_length=10, choices=BackupHealth.choices, default=BackupHealth.UNKNOWN)
    health_detail = models.CharField(max_length=500, blank=True)
    # Physical: WAL archiving configured on the cluster (archive_mode, archive_command).
    archiving = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestrictedQuerySet.as_manager()
    restrict_policy = staticmethod(_everyone_reads)


class Backup(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="backups")
    method = models.CharField(max_length=10, choices=BackupMethod.choices)
    state = models.CharField(max_length=10, choices=BackupState.choices, default=BackupState.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Where it lives in the storage (provisioning/backups/storage.py), relative to the backup root.
    key = models.CharField(max_length=300, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    wal_start = models.CharField(max_length=40, blank=True, help_text="LSN the backup starts at (physical)")
    wal_end = models.CharField(max_length=40, blank=True, help_text="LSN it is consistent at (physical)")
    wal_start_file = models.CharField(max_length=40, blank=True)
    checksum = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the manifest (or the dumps' sums)")
    verified = models.BooleanField(default=False)
    verify_output = models.TextField(blank=True)
    # {database: {"schema.table": rows}} counted right after the backup ended.
    row_counts = models.JSONField(default=dict, blank=True)
    databases = models.JSONField(default=list, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="removed by retention")

    objects = RestrictedQuerySet.as_manager()
    restrict_policy = staticmethod(_everyone_reads)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["instance", "state", "-started_at"], name="backup_recent")]


class RestoreDrill(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="restore_drills")
    backup = models.ForeignKey(Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="drills")
    trigger = models.CharField(max_length=10, choices=DrillTrigger.choices, default=DrillTrigger.SCHEDULED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    state = models.CharField(max_length=10, choices=DrillState.choices, default=DrillState.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # None: the newest state the archive holds ("latest"); else the recovery target time.
    target_time = models.DateTimeField(null=True, blank=True)
    restored_to = models.DateTimeField(null=True, blank=True, help_text="the last commit the restored copy holds")
    rto_seconds = models.FloatField(null=True, blank=True, help_text="drill start to a queryable copy")
    rpo_seconds = models.FloatField(null=True, blank=True, help_text="target minus the last restored commit")
    checks = models.JSONField(default=list, blank=True)  # [{"name", "ok", "detail"}]
    error = models.TextField(blank=True)

    objects = RestrictedQuerySet.as_manager()
    restrict_policy = staticmethod(_everyone_reads)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["instance", "-started_at"], name="drill_recent")]


class TeamCheckExpect(models.TextChoices):
    """What a team's check query must return for the drill to pass (a small, closed vocabulary)."""

    ROWS = "rows", "returns at least one row"
    NO_ROWS = "no_rows", "returns no rows"
    EQUALS = "equals", "the first column of the first row equals the expected value (as text)"


class TeamCheck(models.Model):
    """A check query the team owning schemas of a database defines for the drills of its instance.

    Its leads create, change and delete it (portal/services/team_checks.py); its members read it;
    reviewers, auditors and admins see every team's. `sql` is the normalised text the portal
    checked (provisioning/backups/team_checks.py), never the text as typed: one plain SELECT over
    the team's own schemas calling only allow-listed built-ins, run in each drill as a read-only
    role of the team's that may read its schemas and nothing else.
    """

    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="team_checks")
    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="drill_checks")
    database = models.CharField(max_length=63)
    name = models.CharField(max_length=63)
    sql = models.TextField()
    expect = models.CharField(max_length=10, choices=TeamCheckExpect.choices, default=TeamCheckExpect.ROWS)
    expected = models.CharField(max_length=200, blank=True, help_text="the value compared with (expect = equals)")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestrictedQuerySet.as_manager()
    # Members of the team see it (restrict's default by team); changes are checked by the service.
    team_path = "team"

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [models.UniqueConstraint(fields=["instance", "team", "name"], name="team_check_unique")]

    def __str__(self) -> str:
        return f"{self.instance}/{self.team}/{self.name}"
