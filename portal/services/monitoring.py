"""Monitoring writes (issue #21): storing samples, opening and resolving alerts, thresholds, compaction.

Who runs what:
- `sample_store` / `sample_failure_store` run in the per-instance beat task (portal/tasks.py,
  as the system): they store the sample and evaluate the alerts in the same transaction.
- `alert_threshold_set` is a platform admin's act (PolicyViolation for anyone else), audited as
  `monitoring.threshold_set`.
- `monitoring_compact` runs from beat: raw samples older than MONITORING_RAW_HOURS are folded
  into one row per instance and hour, hourly rows older than MONITORING_RETENTION_DAYS deleted.

Alerts are deduplicated (a partial unique index allows one open alert per instance and kind);
an alert opens when its figure reaches the threshold (>=) and resolves on the first sample
where it no longer does. Each opening and resolution is one audit event
(`monitoring.alert_opened`, `monitoring.alert_resolved`) and one notification
(portal/services/notifications.py `alert_notify_send`, published after the commit).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import Alert, AlertThreshold, Instance, MonitoringSample
from portal.models.monitoring import AlertKind, AlertStatus, SampleResolution
from portal.notifications import alert_notify_enqueue
from portal.personas import is_admin

log = structlog.get_logger(__name__)

# The figure of a sample (its `metrics`) each alert kind compares with its threshold.
ALERT_METRIC = {
    AlertKind.REPLICATION_LAG: "replication_lag_bytes",
    AlertKind.WRAPAROUND: "max_xid_age",
    AlertKind.BLOCKED_SESSIONS: "blocked_sessions",
    AlertKind.LONG_TRANSACTION: "longest_transaction_seconds",
    AlertKind.CONNECTIONS: "connections_percent",
}


def thresholds_for(instance: Instance) -> dict[str, float | None]:
    """Each alert kind's threshold for the instance: its override, else the default (None: off)."""
    thresholds: dict[str, float | None] = {kind: float(value) for kind, value in settings.MONITORING_THRESHOLDS.items()}
    for kind, value in AlertThreshold.objects.filter(instance=instance).values_list("kind", "value"):
        thresholds[kind] = value
    return thresholds


def _failed_in_a_row(instance: Instance) -> int:
    count = 0
    for ok in (MonitoringSample.objects.filter(instance=instance, resolution=SampleResolution.RAW)
               .order_by("-taken_at").values_list("ok", flat=True)[:1000]):
        if ok:
            break
        count += 1
    return count


def _alert_body(alert: Alert) -> dict[str, Any]:
    return {"kind": alert.kind, "value": alert.value, "threshold": alert.threshold, "detail": alert.detail}


def _open(instance: Instance, kind: str, value: float, threshold: float, detail: str, at: datetime) -> None:
    alert = Alert.objects.select_for_update().filter(instance=instance, kind=kind, status=AlertStatus.OPEN).first()
    if alert is not None:
        alert.value, alert.last_seen_at, alert.detail = value, at, detail[:500]
        alert.save(update_fields=["value", "last_seen_at", "detail"])
        return
    alert = Alert.objects.create(instance=instance, kind=kind, value=value, threshold=threshold, detail=detail[:500],
                                 opened_at=at, last_seen_at=at)
    record("monitoring.alert_opened", object_type="alert", object_id=alert.pk, instance=instance,
           outcome="opened", details=_alert_body(alert))
    transaction.on_commit(lambda: alert_notify_enqueue(alert.pk, "opened"))


def _resolve(instance: Instance, kind: str, value: float | None, at: datetime) -> None:
    alert = Alert.objects.select_for_update().filter(instance=instance, kind=kind, status=AlertStatus.OPEN).first()
    if alert is None:
        return
    alert.status, alert.resolved_at, alert.last_seen_at = AlertStatus.RESOLVED, at, at
    alert.save(update_fields=["status", "resolved_at", "last_seen_at"])
    record("monitoring.alert_resolved", object_type="alert", object_id=alert.pk, instance=instance,
           outcome="resolved", details={**_alert_body(alert), "cleared_at_value": value,
                                        "open_seconds": round((at - alert.opened_at).total_seconds(), 3)})
    transaction.on_commit(lambda: alert_notify_enqueue(alert.pk, "resolved"))


def _detail(kind: str, body: dict) -> str:
    if kind == AlertKind.BLOCKED_SESSIONS:
        pairs = [f"{s['pid']} ({s['role']}) waits for {', '.join(map(str, s['blocked_by']))}"
                 for s in body.get("sessions", []) if s.get("blocked_by")]
        return "; ".join(pairs)
    if kind == AlertKind.LONG_TRANSACTION:
        longest = max((s for s in body.get("sessions", []) if s.get("xact_seconds") is not None
                       and s.get("state") != "idle"), key=lambda s: s["xact_seconds"], default=None)
        return "" if longest is None else (f"pid {longest['pid']} ({longest['role']} on {longest['database']},"
                                           f" {longest['state']}) for {longest['xact_seconds']:.0f} s")
    return ""


def alerts_evaluate(instance: Instance, *, metrics: dict | None, body: dict | None, failed_in_a_row: int,
                    at: datetime) -> None:
    """Open or resolve each alert kind of the instance from its latest sample (inside a transaction)."""
    thresholds = thresholds_for(instance)
    failed_threshold = thresholds.get(AlertKind.SAMPLE_FAILED)
    if failed_threshold is not None and failed_in_a_row >= failed_threshold:
        error = MonitoringSample.objects.filter(instance=instance).order_by("-taken_at").values_list(
            "error", flat=True).first() or ""
        _open(instance, AlertKind.SAMPLE_FAILED, float(failed_in_a_row), failed_threshold, error, at)
    else:
        _resolve(instance, AlertKind.SAMPLE_FAILED, float(failed_in_a_row), at)
    if metrics is None:
        return  # a failed sample says nothing about the other figures: their alerts stay as they are
    for kind, metric in ALERT_METRIC.items():
        value, threshold = metrics.get(metric), thresholds.get(kind)
        if value is not None and threshold is not None and value >= threshold:
            _open(instance, kind, float(value), threshold, _detail(kind, body or {}), at)
        else:
            _resolve(instance, kind, value, at)


# The per-object detail of a sample (sessions, tables, statements) is what the pages show of "now":
# only the newest successful sample keeps it; older rows keep their figures (metrics, connection
# counts, databases), which is what charts, hourly folding and history read. This keeps a raw row
# a few kilobytes whatever the number of sessions and tables.
DETAIL_KEYS = ("sessions", "tables", "statements")


def _trim_older_detail(instance: Instance, at: datetime) -> int:
    trimmed = 0
    for row in (MonitoringSample.objects.filter(instance=instance, resolution=SampleResolution.RAW, ok=True,
                                                taken_at__lt=at, body__has_key="sessions").only("id", "body")):
        row.body = {key: value for key, value in row.body.items() if key not in DETAIL_KEYS}
        row.save(update_fields=["body"])
        trimmed += 1
    return trimmed


def sample_store(instance: Instance, body: dict, *, duration_ms: float, at: datetime | None = None) -> MonitoringSample:
    """Store one successful sample, trim the detail of the older ones and evaluate the instance's
    alerts (one transaction)."""
    at = at or timezone.now()
    with transaction.atomic():
        sample = MonitoringSample.objects.create(instance=instance, taken_at=at, ok=True, duration_ms=duration_ms,
                                                 body=body)
        _trim_older_detail(instance, at)
        alerts_evaluate(instance, metrics=body.get("metrics", {}), body=body, failed_in_a_row=0, at=at)
    return sample


def sample_failure_store(instance: Instance, error: str, *, at: datetime | None = None) -> MonitoringSample:
    """Store a failed sample (its reason, no figures) and evaluate the failed-sample alert."""
    at = at or timezone.now()
    with transaction.atomic():
        sample = MonitoringSample.objects.create(instance=instance, taken_at=at, ok=False, error=error[:500])
        alerts_evaluate(instance, metrics=None, body=None, failed_in_a_row=_failed_in_a_row(instance), at=at)
    return sample


def alert_threshold_set(*, instance: Instance, kind: str, value: float | None, actor: Any,
                        actor_ip: str | None = None, reset: bool = False) -> AlertThreshold | None:
    """A platform admin overrides one alert kind's threshold for an instance (None: off), or
    `reset` goes back to the default. Audited as `monitoring.threshold_set`."""
    if not is_admin(actor):
        raise PolicyViolation("only platform admins may change alert thresholds")
    if kind not in AlertKind.values:
        raise InvalidPayload.field("kind", f"must be one of {', '.join(AlertKind.values)}")
    if value is not None and not (isinstance(value, int | float) and 0 <= value < float("inf")):
        raise InvalidPayload.field("value", "must be a finite number of at least 0, or null to turn the alert off")
    with transaction.atomic():
        before = AlertThreshold.objects.filter(instance=instance, kind=kind).values_list("value", flat=True).first()
        if reset:
            AlertThreshold.objects.filter(instance=instance, kind=kind).delete()
            row = None
        else:
            row, _ = AlertThreshold.objects.update_or_create(instance=instance, kind=kind, defaults={"value": value})
        record("monitoring.threshold_set", actor=actor, actor_ip=actor_ip, object_type="instance",
               object_id=instance.pk, instance=instance, outcome="ok",
               details={"kind": kind, "before": before, "value": None if reset else value, "reset": reset,
                        "default": settings.MONITORING_THRESHOLDS.get(kind)})
    return row


def _fold(rows: list[MonitoringSample]) -> dict:
    """One hour of samples as averages and maxima of their metrics."""
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for name, value in (row.body.get("metrics") or {}).items():
            if value is not None:
                values[name].append(float(value))
    return {"metrics": {name: round(sum(v) / len(v), 6) for name, v in values.items()},
            "max": {name: max(v) for name, v in values.items()},
            "samples": len(rows), "failed": sum(1 for r in rows if not r.ok)}


def monitoring_compact(now: datetime | None = None) -> dict[str, int]:
    """Fold raw samples past the raw window into hourly rows, delete rows past retention."""
    now = now or timezone.now()
    raw_before = now - timedelta(hours=settings.MONITORING_RAW_HOURS)
    # Whole hours only: an hour still partly inside the raw window waits for the next run.
    raw_before = raw_before.replace(minute=0, second=0, microsecond=0)
    folded = 0
    groups: dict[tuple[int, datetime], list[MonitoringSample]] = defaultdict(list)
    for row in (MonitoringSample.objects.filter(resolution=SampleResolution.RAW, taken_at__lt=raw_before)
                .only("id", "instance_id", "taken_at", "resolution", "ok", "body").order_by("instance_id", "taken_at").iterator()):
        groups[(row.instance_id, row.taken_at.replace(minute=0, second=0, microsecond=0))].append(row)
    for (instance_id, hour), rows in groups.items():
        with transaction.atomic():
            existing = MonitoringSample.objects.select_for_update().filter(
                instance_id=instance_id, resolution=SampleResolution.HOUR, taken_at=hour).first()
            if existing is not None:
                # A late raw sample for an hour already folded: fold it in with the old figures' weight.
                rows = rows + [existing]
                existing.delete()
            body = _fold(rows)
            MonitoringSample.objects.create(instance_id=instance_id, resolution=SampleResolution.HOUR, taken_at=hour,
                                            ok=body["failed"] < body["samples"], body=body)
            MonitoringSample.objects.filter(pk__in=[r.pk for r in rows if r.resolution == SampleResolution.RAW]).delete()
            folded += len(rows)
    expired, _ = MonitoringSample.objects.filter(
        taken_at__lt=now - timedelta(days=settings.MONITORING_RETENTION_DAYS)).delete()
    return {"folded": folded, "hours": len(groups), "deleted": expired}
