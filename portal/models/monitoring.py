"""Monitoring of managed instances (issue #21): samples, alert thresholds and alerts.

A MonitoringSample is one instance's figures at one time, as one JSON body (docs/monitoring.md
lists every key): raw samples are kept PORTAL_MONITORING_RAW_HOURS, then folded into one hourly
row per instance (resolution "hour"), kept PORTAL_MONITORING_RETENTION_DAYS.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from portal.querysets import RestrictedQuerySet


class SampleResolution(models.TextChoices):
    RAW = "raw", "raw"
    HOUR = "hour", "hourly aggregate"


class AlertKind(models.TextChoices):
    REPLICATION_LAG = "replication_lag", "replication lag (bytes)"
    WRAPAROUND = "wraparound", "transaction ID age"
    BLOCKED_SESSIONS = "blocked_sessions", "blocked sessions"
    LONG_TRANSACTION = "long_transaction", "longest transaction (seconds)"
    CONNECTIONS = "connections", "connections (% of max_connections)"
    SAMPLE_FAILED = "sample_failed", "failed samples in a row"


class AlertStatus(models.TextChoices):
    OPEN = "open", "open"
    RESOLVED = "resolved", "resolved"


class MonitoringSample(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="monitoring_samples")
    taken_at = models.DateTimeField()
    resolution = models.CharField(max_length=4, choices=SampleResolution.choices, default=SampleResolution.RAW)
    ok = models.BooleanField(default=True)
    error = models.CharField(max_length=500, blank=True)
    # How long the sample's queries took on the instance (connect included), in milliseconds.
    duration_ms = models.FloatField(default=0)
    body = models.JSONField(default=dict)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["instance", "resolution", "-taken_at"], name="monitoring_sample_recent")]
        constraints = [models.UniqueConstraint(fields=["instance", "taken_at"], condition=Q(resolution="hour"),
                                               name="monitoring_sample_one_hour_row")]

    @staticmethod
    def restrict_policy(qs, user, action):
        # Instances are visible to every signed-in user; which figures of a sample a user sees
        # is decided by portal/selectors/monitoring.py (a team sees its own schemas' tables).
        return qs if action == "view" else qs.none()


class AlertThreshold(models.Model):
    """A per-instance override of one alert kind's default threshold (portal/conf.py)."""

    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="alert_thresholds")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    # None: this kind never alerts for this instance.
    value = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "kind"], name="alert_threshold_unique")]


class Alert(models.Model):
    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    status = models.CharField(max_length=10, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    detail = models.CharField(max_length=500, blank=True)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at"]
        # Deduplicated: at most one open alert per instance and kind.
        constraints = [models.UniqueConstraint(fields=["instance", "kind"], condition=Q(status="open"),
                                               name="alert_one_open_per_kind")]

    @staticmethod
    def restrict_policy(qs, user, action):
        return qs if action == "view" else qs.none()


class DictionarySnapshot(models.Model):
    """The data dictionary of one managed database as last read (provisioning/dictionary.py).

    A new row only when the structure changed (its `digest`); otherwise the latest row's figures
    and `checked_at` are refreshed. `changes` is the diff from the previous row, each change with
    the request that made it when the portal's records show one (else `request_id` None: made
    outside the portal). The first snapshot of a database is the baseline (no changes).
    """

    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="dictionary_snapshots")
    database = models.CharField(max_length=63)
    taken_at = models.DateTimeField()
    checked_at = models.DateTimeField()
    digest = models.CharField(max_length=64)
    body = models.JSONField(default=dict)
    changes = models.JSONField(default=list)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["instance", "database", "-taken_at"], name="dictionary_snapshot_recent")]

    @staticmethod
    def restrict_policy(qs, user, action):
        # Like the inventory (table names in the request pickers), the structure is visible to
        # every signed-in user; figures are scoped by portal/selectors/dictionary.py.
        return qs if action == "view" else qs.none()
