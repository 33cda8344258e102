"""Forwarding the audit log to SIEM collectors: in order, at least once, from a resumable cursor.

The collectors (syslog RFC 5424 over TCP/TLS, JSON lines over HTTPS), their wire formats and what
acknowledges a batch are audit/siem_transports.py's; this module reads the log, keeps each
collector's cursor and records the forwarder's events.

Ordering and never skipping: a batch is the events after the collector's cursor (`SiemCursor.last_seq`),
ascending, up to the head's seq (`audit_audithead`), stopping at the first gap or at an event
without its hash yet (an event being chained): what is sent is always a gap-free run that
continues the cursor. The cursor moves only after the collector acknowledged, in the same
transaction that holds the cursor row locked (`SELECT … FOR UPDATE SKIP LOCKED`), so two workers
never send the same collector's batch at once. A worker killed between the acknowledgement and
the commit sends that batch again: duplicates are possible across such a crash or a reset
connection, and a collector drops them by `seq`.

Outages delay, never lose: a failed batch leaves the cursor where it was (for a syslog collector,
whose close says it read a batch but not that it kept it, the first failure after a success moves
the cursor back over the last batch, `SiemCursor.batch_from`, so a collector that died after
reading it gets it again) and the next attempt waits an exponential backoff
(PORTAL_SIEM_INTERVAL_SECONDS doubling, capped by PORTAL_SIEM_BACKOFF_MAX_SECONDS, with jitter).
The lag (head seq minus cursor) is on /healthz, on /metrics (`dbportal_siem_lag_events`) and on
the admin page; past PORTAL_SIEM_LAG_ALERT events it raises `audit.forwarding_lagging` once and
mails the platform admins.

Audit events of the forwarder itself, each recorded once per change of state, never per batch,
so forwarding them creates no further work (a healthy batch records nothing):
`audit.forwarding_started` (a collector configured, or its destination changed),
`audit.forwarding_stopped` (no longer configured), `audit.forwarding_failed` (the first failed
attempt after a success), `audit.forwarding_recovered` (the first success after failures),
`audit.forwarding_paused` / `audit.forwarding_resumed` (a platform admin, `siem_pause` /
`siem_resume`), `audit.forwarding_lagging` / `audit.forwarding_caught_up` (the lag alert).

Who can do what: the worker (beat task `audit.siem_forward`) forwards as `system`; a platform admin
reads the state and pauses or resumes a collector (audit/api/siem.py, audit/siem_views.py);
nobody can move a cursor by hand or point a collector elsewhere than the environment says.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from audit.chainer import chain_pending
from audit.models import AuditArchive, AuditEvent, AuditHead, SiemCursor
from audit.services import SYSTEM, record
from audit.siem_transports import Collector, DeliveryFailed, configured_collectors

log = structlog.get_logger(__name__)

COLLECTORS = ("syslog", "https")
# A batch's run may go on for this long before the beat task returns (the next run continues).
RUN_BUDGET_SECONDS = 20.0
_ADVISORY_KEY = 0x5349454D  # "SIEM": serialises the start/stop bookkeeping of cursors across workers
EVENT_FIELDS = ("seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance", "database",
                "statement", "request_id", "approvers", "outcome", "details", "prev_hash", "hash", "key_id",
                "chain_format")


# --- reading the log ------------------------------------------------------------------------------

def head_seq() -> int:
    return AuditHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0


def events_after(after_seq: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` events after `after_seq`, ascending, as a gap-free run continuing it.

    Only events the head covers (seq ≤ head seq: committed and chained) are read, and the run stops
    at the first missing seq or an event without its hash, so an event still being chained is
    waited for, never skipped.
    """
    last = head_seq()
    if last <= after_seq:
        return []
    rows = list(AuditEvent.objects.filter(seq__gt=after_seq, seq__lte=last).order_by("seq")
                .values(*EVENT_FIELDS)[:limit])
    run: list[dict[str, Any]] = []
    expected = after_seq + 1
    if rows and rows[0]["seq"] != expected:
        # Events that left the online table with a detached archive are not a gap to wait at (the
        # forwarder reads only the online table). A month is detached only once every forwarding
        # collector acknowledged it, so a cursor below it is one sent back over a batch
        # (forward_one_batch), or a collector added, or configured again after being stopped, since:
        # it starts at the online log, and the archived months are in the archive files.
        detached_through = (AuditArchive.objects.filter(detached_at__isnull=False)
                            .aggregate(through=Max("last_seq"))["through"] or 0)
        if expected <= detached_through:
            log.info("siem.from_online_log", after_seq=after_seq, detached_through=detached_through)
            expected = detached_through + 1
    for row in rows:
        if row["seq"] != expected or not row["hash"]:
            break
        run.append(row)
        expected += 1
    return run


# --- the forwarder (worker) -----------------------------------------------------------------------

def sync_cursors(collectors: dict[str, Collector]) -> None:
    """A cursor row per configured collector; start and stop of forwarding are events.

    A new collector starts at the beginning of the online log (the SIEM gets the whole trail still
    online; detached months are in the archive files: events_after); a changed destination keeps
    the cursor (the same collector moved). One worker at a time (advisory lock).
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_KEY])
        existing = {row.name: row for row in SiemCursor.objects.select_for_update()}
        for name, collector in collectors.items():
            row = existing.get(name)
            if row is None:
                row = SiemCursor.objects.create(name=name, destination=collector.destination)
                _record_started(row, previous="")
            elif row.state == "stopped" or row.destination != collector.destination:
                previous = row.destination
                row.destination, row.state, row.failures, row.next_attempt_at = collector.destination, "ok", 0, None
                row.save()
                _record_started(row, previous=previous)
        for name, row in existing.items():
            if name not in collectors and row.state != "stopped" and row.destination:
                row.state, row.next_attempt_at = "stopped", None
                row.save()
                record("audit.forwarding_stopped", actor=SYSTEM, object_type="siem_collector", object_id=name,
                       outcome="ok", details={"collector": name, "destination": row.destination,
                                              "last_seq": row.last_seq, "reason": "no longer configured"})


def _record_started(row: SiemCursor, *, previous: str) -> None:
    details = {"collector": row.name, "destination": row.destination, "from_seq": row.last_seq}
    if previous:
        details["previous_destination"] = previous
    record("audit.forwarding_started", actor=SYSTEM, object_type="siem_collector", object_id=row.name,
           outcome="ok", details=details)


def _backoff(failures: int) -> timedelta:
    base = settings.SIEM_INTERVAL_SECONDS * (2 ** min(failures - 1, 20))
    capped = min(base, settings.SIEM_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=capped * random.uniform(0.5, 1.0))


def forward_one_batch(collector: Collector) -> str:
    """Send the next batch to `collector` and move its cursor if acknowledged.

    Returns "sent", "idle" (nothing new), "waiting" (paused, backing off, or another worker has
    the cursor) or "failed".
    """
    now = timezone.now()
    with transaction.atomic():
        row = SiemCursor.objects.select_for_update(skip_locked=True).filter(name=collector.name).first()
        if row is None or row.paused or row.state == "stopped":
            return "waiting"
        if row.next_attempt_at is not None and row.next_attempt_at > now:
            return "waiting"
        events = events_after(row.last_seq, settings.SIEM_BATCH_SIZE)
        if not events:
            if _check_lag(row):
                row.save()
            return "idle"
        try:
            collector.send(events, timeout=settings.SIEM_TIMEOUT_SECONDS)
        except DeliveryFailed as exc:
            row.failures += 1
            row.last_error, row.last_error_at = exc.reason, timezone.now()
            row.next_attempt_at = row.last_error_at + _backoff(row.failures)
            log.warning("siem.delivery_failed", collector=row.name, reason=exc.reason, failures=row.failures,
                        cursor=row.last_seq)
            if row.state != "failing":
                row.state = "failing"
                details = {"collector": row.name, "destination": row.destination, "reason": exc.reason,
                           "cursor": row.last_seq}
                if not collector.acknowledges_storage and row.batch_from < row.last_seq:
                    # The collector may have read the last batch and died before keeping it: send it
                    # again (a duplicate the collector drops by seq, never a loss).
                    details["resend_from"] = row.last_seq = row.batch_from
                record("audit.forwarding_failed", actor=SYSTEM, object_type="siem_collector", object_id=row.name,
                       outcome="failed", details=details)
            _check_lag(row)
            row.save()
            return "failed"
        row.batch_from, row.last_seq, row.last_sent_at = row.last_seq, events[-1]["seq"], timezone.now()
        if row.state == "failing":
            record("audit.forwarding_recovered", actor=SYSTEM, object_type="siem_collector", object_id=row.name,
                   outcome="ok", details={"collector": row.name, "destination": row.destination,
                                          "failed_attempts": row.failures, "cursor": row.last_seq})
            row.state = "ok"
        row.failures, row.next_attempt_at = 0, None
        _check_lag(row)
        row.save()
        return "sent"


def _check_lag(row: SiemCursor) -> bool:
    """Raise the lag alert once when the lag passes PORTAL_SIEM_LAG_ALERT, clear it under half of it;
    whether the row changed."""
    lag = head_seq() - row.last_seq
    threshold = settings.SIEM_LAG_ALERT
    if lag > threshold and not row.lagging:
        row.lagging = True
        record("audit.forwarding_lagging", actor=SYSTEM, object_type="siem_collector", object_id=row.name,
               outcome="lagging", details={"collector": row.name, "lag": lag, "threshold": threshold,
                                           "cursor": row.last_seq, "last_error": row.last_error})
        log.error("siem.lagging", collector=row.name, lag=lag, threshold=threshold)
        name, error = row.name, row.last_error
        transaction.on_commit(lambda: _mail_admins_lagging(name, lag, threshold, error))
        return True
    if lag <= threshold // 2 and row.lagging:
        row.lagging = False
        record("audit.forwarding_caught_up", actor=SYSTEM, object_type="siem_collector", object_id=row.name,
               outcome="ok", details={"collector": row.name, "lag": lag, "threshold": threshold})
        return True
    return False


def _mail_admins_lagging(name: str, lag: int, threshold: int, error: str) -> None:
    recipients = sorted({email for email in User.objects.filter(
        groups__name="platform-admins", is_active=True).values_list("email", flat=True) if email})
    if not recipients:
        return
    try:
        send_mail(subject=f"[dbportal] audit forwarding to {name} is {lag} events behind",
                  message=(f"The SIEM collector {name} is {lag} events behind the audit log (alert at {threshold}).\n"
                           f"Last error: {error or '-'}\nNothing is lost: the events are sent when it answers."),
                  from_email=None, recipient_list=recipients)
    except Exception as exc:  # noqa: BLE001 - a mail server down costs the mail, never the forwarding
        log.warning("siem.alert_mail_failed", collector=name, error=type(exc).__name__)


def forward_all(*, budget_seconds: float = RUN_BUDGET_SECONDS) -> dict[str, int]:
    """The beat task's body: bring the cursors in step with the configuration, then send batches to
    each collector until it is idle, failing, waiting, or the budget is spent. Returns batches sent."""
    collectors = configured_collectors()
    sync_cursors(collectors)
    if collectors:
        # Chain what is pending first (without waiting for another chainer): the forwarder reads
        # chained events only, and this saves waiting for the chainer's own beat tick.
        try:
            chain_pending(wait=False)
        except Exception as exc:  # noqa: BLE001 - the events stay pending and are forwarded once chained
            log.warning("siem.chain_deferred", error=type(exc).__name__)
    sent = dict.fromkeys(collectors, 0)
    deadline = timezone.now() + timedelta(seconds=budget_seconds)
    active = dict(collectors)
    while active and timezone.now() < deadline:
        for name, collector in list(active.items()):
            if forward_one_batch(collector) == "sent":
                sent[name] += 1
            else:
                del active[name]
    return sent


# --- reading the state, pause and resume (platform admins) ----------------------------------------

@dataclass(frozen=True)
class CollectorStatus:
    name: str
    destination: str
    configured: bool
    state: str  # ok | failing | paused | stopped
    last_seq: int
    head_seq: int
    lag: int
    last_error: str
    last_error_at: datetime | None
    last_sent_at: datetime | None
    next_attempt_at: datetime | None
    failures: int
    paused_by: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def collector_statuses() -> list[CollectorStatus]:
    """Every collector with a cursor or a configuration: two queries whatever their number."""
    head = head_seq()
    configured = configured_collectors()
    rows = {row.name: row for row in SiemCursor.objects.all()}
    statuses = []
    for name in sorted(set(rows) | set(configured)):
        row = rows.get(name) or SiemCursor(name=name, destination=configured[name].destination)
        state = "paused" if row.paused else row.state
        statuses.append(CollectorStatus(
            name=name, destination=row.destination, configured=name in configured, state=state,
            last_seq=row.last_seq, head_seq=head, lag=max(head - row.last_seq, 0), last_error=row.last_error,
            last_error_at=row.last_error_at, last_sent_at=row.last_sent_at, next_attempt_at=row.next_attempt_at,
            failures=row.failures, paused_by=row.paused_by))
    return statuses


class UnknownCollector(Exception):
    pass


def _admin_cursor(name: str) -> SiemCursor:
    """The collector's cursor, locked; created for a known name not configured yet, so an admin can
    pause a collector before it is configured (it then starts paused)."""
    if name not in COLLECTORS:
        raise UnknownCollector(name)
    SiemCursor.objects.get_or_create(name=name)
    return SiemCursor.objects.select_for_update().get(name=name)


def siem_pause(*, name: str, actor: Any, actor_ip: str | None, reason: str = "") -> SiemCursor:
    """A platform admin stops forwarding to one collector for now; the cursor stays, nothing is lost."""
    with transaction.atomic():
        row = _admin_cursor(name)
        changed = not row.paused
        row.paused, row.paused_by = True, getattr(actor, "username", str(actor))
        row.save()
        record("audit.forwarding_paused", actor=actor, actor_ip=actor_ip, object_type="siem_collector",
               object_id=name, outcome="ok" if changed else "unchanged",
               details={"collector": name, "cursor": row.last_seq, "reason": reason[:500]})
    return row


def siem_resume(*, name: str, actor: Any, actor_ip: str | None) -> SiemCursor:
    """Resume forwarding from the cursor; the next attempt is not held back by an earlier backoff."""
    with transaction.atomic():
        row = _admin_cursor(name)
        changed = row.paused
        row.paused, row.paused_by, row.next_attempt_at = False, "", None
        row.save()
        record("audit.forwarding_resumed", actor=actor, actor_ip=actor_ip, object_type="siem_collector",
               object_id=name, outcome="ok" if changed else "unchanged",
               details={"collector": name, "cursor": row.last_seq})
    return row


def siem_health() -> dict[str, dict[str, Any]]:
    """For /healthz: each collector's state and lag (no destination, no error text: /healthz is public)."""
    return {status.name: {"state": status.state, "lag": status.lag, "last_seq": status.last_seq}
            for status in collector_statuses() if status.configured or status.state != "stopped"}


class SiemMetrics:
    """Prometheus collector read at scrape time from the cursor rows, so every web process reports
    the same figures: `dbportal_siem_lag_events`, `dbportal_siem_failing`, `dbportal_siem_paused`,
    `dbportal_siem_last_sent_timestamp_seconds`, each labelled by collector."""

    def _families(self) -> dict[str, Any]:
        return {
            "lag": GaugeMetricFamily("dbportal_siem_lag_events",
                                     "audit events the SIEM collector has not acknowledged yet", labels=["collector"]),
            "failing": GaugeMetricFamily("dbportal_siem_failing", "1 while deliveries to the collector fail",
                                         labels=["collector"]),
            "paused": GaugeMetricFamily("dbportal_siem_paused", "1 while a platform admin paused the collector",
                                        labels=["collector"]),
            "sent": GaugeMetricFamily("dbportal_siem_last_sent_timestamp_seconds",
                                      "when the collector last acknowledged a batch (Unix time)", labels=["collector"]),
        }

    def describe(self):
        # Registration calls describe(), not collect(): no database query when the app loads.
        return list(self._families().values())

    def collect(self):
        families = self._families()
        try:
            statuses = collector_statuses()
        except Exception as exc:  # noqa: BLE001 - a scrape with the database down reports no SIEM figures
            log.warning("siem.metrics_unavailable", error=type(exc).__name__)
            return []
        for status in statuses:
            if status.state == "stopped":
                continue
            families["lag"].add_metric([status.name], status.lag)
            families["failing"].add_metric([status.name], 1 if status.state == "failing" else 0)
            families["paused"].add_metric([status.name], 1 if status.state == "paused" else 0)
            if status.last_sent_at is not None:
                families["sent"].add_metric([status.name], status.last_sent_at.timestamp())
        return list(families.values())


_metrics: SiemMetrics | None = None


def register_metrics() -> None:
    """Register the SIEM gauges with prometheus_client's registry (what /metrics serves), once."""
    global _metrics
    if _metrics is None:
        _metrics = SiemMetrics()
        REGISTRY.register(_metrics)


def forwarded_up_to() -> int | None:
    """The highest seq every forwarding collector (configured, not stopped) has acknowledged, or None
    when none forwards. Retention should not detach events above it: a collector that is down for
    months would otherwise find them gone from the online table (the forwarder reads only there)."""
    configured = configured_collectors()
    if not configured:
        return None
    seqs = [row.last_seq for row in SiemCursor.objects.filter(name__in=configured).exclude(state="stopped")]
    return min(seqs) if len(seqs) == len(configured) else 0
