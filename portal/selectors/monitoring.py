"""Monitoring reads (issue #21): the latest samples, series for charts, and the Prometheus gauges.

The gauges are produced by `MonitoringCollector`, a prometheus_client collector that reads the
latest sample row of each instance when scraped (two queries), registered on a registry of its
own for each scrape: no process keeps monitoring state, so every web process answers the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from portal.models import Alert, AlertThreshold, ManagedRole, ManagedSchema, MonitoringSample
from portal.models.monitoring import AlertKind, AlertStatus, SampleResolution
from portal.personas import sees_everything

PREFIX = "dbportal_instance_"

# Each flat figure of a sample (provisioning/monitoring.py summarise) as a gauge: name, help.
GAUGES = {
    "connections": ("connections", "Client sessions on the instance"),
    "connections_percent": ("connections_percent", "Client sessions as a percentage of max_connections"),
    "active_sessions": ("active_sessions", "Sessions running a statement"),
    "idle_in_transaction": ("idle_in_transaction_sessions", "Sessions idle inside an open transaction"),
    "blocked_sessions": ("blocked_sessions", "Sessions waiting for a lock another session holds"),
    "blocking_sessions": ("blocking_sessions", "Sessions holding a lock others wait for"),
    "longest_transaction_seconds": ("longest_transaction_seconds", "Age of the oldest open transaction"),
    "max_xid_age": ("max_xid_age", "Transaction-ID age of the oldest database (wraparound at 2^31)"),
    "database_bytes": ("database_bytes", "Total size of the databases the admin login may connect to"),
    "cache_hit_ratio": ("cache_hit_ratio", "Buffer cache hits / (hits + reads) since the statistics reset"),
    "dead_tuples": ("dead_tuples", "Dead tuples in the biggest tables of the managed databases"),
    "tables_vacuum_overdue": ("tables_vacuum_overdue", "Tables whose dead tuples passed the autovacuum threshold"),
    "replication_lag_bytes": ("replication_lag_bytes", "Bytes a replica has received but not replayed"),
    "replication_lag_seconds": ("replication_lag_seconds", "Seconds a replica's replay is behind"),
}


def latest_samples() -> list[MonitoringSample]:
    """The newest raw sample of every instance (one query: DISTINCT ON instance)."""
    return list(MonitoringSample.objects.filter(resolution=SampleResolution.RAW, instance__status__in=[
        "reachable", "unreachable", "unhealthy", "unknown"]).select_related("instance")
        .order_by("instance_id", "-taken_at").distinct("instance_id"))


def latest_sample(instance) -> MonitoringSample | None:
    return (MonitoringSample.objects.filter(instance=instance, resolution=SampleResolution.RAW)
            .order_by("-taken_at").first())


def latest_good_sample(instance) -> MonitoringSample | None:
    return (MonitoringSample.objects.filter(instance=instance, resolution=SampleResolution.RAW, ok=True)
            .order_by("-taken_at").first())


def series(instance, *, since: datetime, metrics: list[str]) -> dict:
    """{"t": [iso times], metric: [values]} of the instance's samples since `since`, raw and
    hourly rows together (the hourly averages where the raw ones were folded)."""
    rows = (MonitoringSample.objects.filter(instance=instance, taken_at__gte=since, ok=True)
            .order_by("taken_at").values_list("taken_at", "body"))
    out: dict = {"t": []}
    for name in metrics:
        out[name] = []
    for taken_at, body in rows:
        figures = body.get("metrics") or {}
        out["t"].append(taken_at.isoformat())
        for name in metrics:
            out[name].append(figures.get(name))
    return out


# The instance-wide figures every signed-in user may chart (no team's objects in them).
CHART_METRICS = ["connections", "connections_percent", "blocked_sessions", "longest_transaction_seconds",
                 "idle_in_transaction", "replication_lag_bytes", "max_xid_age", "cache_hit_ratio", "database_bytes",
                 "dead_tuples"]
MAX_SERIES_HOURS = 24 * 90


def series_for(instance, *, hours: float) -> dict:
    return series(instance, since=timezone.now() - timedelta(hours=hours), metrics=CHART_METRICS)


def _team_scope(user, instance) -> tuple[set[tuple[str, str]], set[str]]:
    """(database, schema) pairs and role names of the user's teams on the instance."""
    schemas = ManagedSchema.objects.filter(instance=instance, team__memberships__user=user)
    pairs = set(schemas.values_list("database", "name"))
    roles = set(schemas.values_list("owner_role", flat=True))
    roles |= set(ManagedRole.objects.filter(instance=instance, team__memberships__user=user, dropped_at__isnull=True)
                 .values_list("name", flat=True))
    return pairs, roles


def alerts_for(user, instance, *, limit: int = 20) -> list[dict]:
    """Open alerts first, then the latest resolved; the detail (roles, pids) for reviewers,
    auditors and admins only."""
    everything = sees_everything(user)
    rows = (Alert.objects.filter(instance=instance).order_by("status", "-opened_at")[:limit])
    return [{"id": a.pk, "kind": a.kind, "status": a.status, "value": a.value, "threshold": a.threshold,
             "detail": a.detail if everything else "", "opened_at": a.opened_at, "last_seen_at": a.last_seen_at,
             "resolved_at": a.resolved_at} for a in rows]


def thresholds_view(instance) -> list[dict]:
    overrides = dict(AlertThreshold.objects.filter(instance=instance).values_list("kind", "value"))
    return [{"kind": kind, "label": label, "default": settings.MONITORING_THRESHOLDS.get(kind),
             "override": kind in overrides, "value": overrides.get(kind, settings.MONITORING_THRESHOLDS.get(kind))}
            for kind, label in AlertKind.choices]


def monitoring_view_for(user, instance) -> dict[str, Any]:
    """The latest figures of an instance as `user` may see them.

    Reviewers, auditors and admins see everything. Anyone else sees the instance-wide figures
    (counts, ages, ratios), and of the per-object figures only those of their teams' schemas
    (tables) and roles (sessions, statements): another team's table names, sizes, sessions and
    statements are left out.
    """
    everything = sees_everything(user)
    latest = latest_sample(instance)
    good = latest if latest is not None and latest.ok else latest_good_sample(instance)
    body = good.body if good is not None else {}
    sessions = body.get("sessions", [])
    tables = body.get("tables", [])
    statements = body.get("statements") or {"available": False, "reason": "no sample yet"}
    connections = body.get("connections") or {}
    if not everything:
        pairs, roles = _team_scope(user, instance)
        tables = [t for t in tables if (t["database"], t["schema"]) in pairs]
        sessions = [s for s in sessions if s["role"] in roles]
        if statements.get("available"):
            statements = {"available": True, "top": [s for s in statements["top"] if s["role"] in roles]}
        connections = {"total": connections.get("total"), "by_state": connections.get("by_state", {})}
    blocks: dict[int, list[int]] = {}
    for session in body.get("sessions", []):
        for pid in session["blocked_by"]:
            blocks.setdefault(pid, []).append(session["pid"])
    sessions = [dict(s, blocks=sorted(blocks.get(s["pid"], []))) for s in sessions]
    return {
        "instance": instance.name,
        "scope": "all" if everything else "team",
        "taken_at": good.taken_at if good else None,
        "latest_ok": latest.ok if latest else None,
        "latest_error": (latest.error if everything else "sample failed") if latest and not latest.ok else "",
        "duration_ms": good.duration_ms if good else None,
        "metrics": body.get("metrics", {}),
        "max_connections": body.get("max_connections"),
        "connections": connections,
        "sessions": sessions,
        "tables": sorted(tables, key=lambda t: -t["total_bytes"]),
        "databases": body.get("databases", []) if everything else [],
        "replication": body.get("replication", {}),
        "statements": statements,
        "alerts": alerts_for(user, instance),
    }


class MonitoringCollector(Collector):
    """Gauges from the latest sample row of each instance, labelled by instance."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples = latest_samples()
        now = timezone.now()
        up = GaugeMetricFamily(PREFIX + "up", "1 when the latest monitoring sample succeeded", labels=["instance"])
        age = GaugeMetricFamily(PREFIX + "sample_age_seconds", "Seconds since the latest monitoring sample",
                                labels=["instance"])
        duration = GaugeMetricFamily(PREFIX + "sample_duration_seconds", "How long the latest sample's queries took",
                                     labels=["instance"])
        figures = {key: GaugeMetricFamily(PREFIX + name, text, labels=["instance"])
                   for key, (name, text) in GAUGES.items()}
        by_state = GaugeMetricFamily(PREFIX + "connections_by_state", "Client sessions by state",
                                     labels=["instance", "state"])
        db_size = GaugeMetricFamily(PREFIX + "database_size_bytes", "Size of each database",
                                    labels=["instance", "database"])
        db_xid = GaugeMetricFamily(PREFIX + "database_xid_age", "Transaction-ID age of each database",
                                   labels=["instance", "database"])
        for sample in samples:
            name = sample.instance.name
            up.add_metric([name], 1.0 if sample.ok else 0.0)
            age.add_metric([name], max((now - sample.taken_at).total_seconds(), 0.0))
            if not sample.ok:
                continue
            duration.add_metric([name], sample.duration_ms / 1000.0)
            metrics = sample.body.get("metrics") or {}
            for key, family in figures.items():
                if metrics.get(key) is not None:
                    family.add_metric([name], float(metrics[key]))
            for state, count in sorted((sample.body.get("connections") or {}).get("by_state", {}).items()):
                by_state.add_metric([name, state], float(count))
            for database in sample.body.get("databases") or []:
                if database.get("size_bytes") is not None:
                    db_size.add_metric([name, database["name"]], float(database["size_bytes"]))
                if database.get("xid_age") is not None:
                    db_xid.add_metric([name, database["name"]], float(database["xid_age"]))
        alerts = GaugeMetricFamily(PREFIX + "alert_open", "1 for each open monitoring alert",
                                   labels=["instance", "kind"])
        for instance_name, kind, _ in (Alert.objects.filter(status=AlertStatus.OPEN)
                                       .values_list("instance__name", "kind").annotate(n=Count("id"))
                                       .order_by("instance__name", "kind")):
            if kind in AlertKind.values:
                alerts.add_metric([instance_name, kind], 1.0)
        yield from (up, age, duration, *figures.values(), by_state, db_size, db_xid, alerts)


def metrics_page() -> bytes:
    """The monitoring gauges in the Prometheus text format (appended to /metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitoringCollector())
    return generate_latest(registry)


def lag_sparklines(instances, *, hours: float = 24, width: int = 100, height: int = 20) -> dict[int, dict]:
    """{instance id: {"points": SVG polyline points, "max": bytes}} of each replica's lag over the
    last `hours`, from its samples (one query for all of them); instances without samples left out."""
    since = timezone.now() - timedelta(hours=hours)
    values: dict[int, list[tuple[float, float]]] = {}
    rows = (MonitoringSample.objects.filter(instance__in=instances, taken_at__gte=since, ok=True)
            .order_by("instance_id", "taken_at")
            .values_list("instance_id", "taken_at", "body__metrics__replication_lag_bytes"))
    start = since.timestamp()
    for instance_id, taken_at, lag in rows:
        if lag is not None:
            values.setdefault(instance_id, []).append(((taken_at.timestamp() - start) / (hours * 3600), float(lag)))
    lines = {}
    for instance_id, points in values.items():
        top = max(lag for _, lag in points) or 1.0
        lines[instance_id] = {"max": max(lag for _, lag in points), "points": " ".join(
            f"{x * width:.1f},{height - 1 - (lag / top) * (height - 2):.1f}" for x, lag in points)}
    return lines
