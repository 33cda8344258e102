"""Backups and restore drills (issue #20): policies, the catalog, drills, health and its alerts.

Who runs what:
- `backup_policy_set` is a platform admin's act (PolicyViolation for anyone else), audited as
  `backup.policy_changed`. Physical backups are for `local` instances only (the portal owns
  their data directory and OS user); logical backups serve both kinds.
- `backup_request` / `drill_request` (take a backup or run a drill now) are platform admins'
  acts too, audited as `backup.requested` / `backup.drill_requested`; the work runs in a worker.
- `backup_run` / `drill_run` run in the per-instance Celery tasks (portal/tasks.py, as the
  system) under the fan-out lock of their job (provisioning/fanout.py: "backup", "drill").
  A Backup row is `running` while the worker works and becomes `ok` only after its files are
  verified; any error makes it `failed` (`backup.taken` / `backup.failed`). Drills end
  `passed` or `failed` (`backup.drill_passed` / `backup.drill_failed`); a failed check of a team's
  own (portal/services/team_checks.py) fails the drill like any other.
- `backup_sweep` (beat) marks `failed` every running backup or drill whose instance's lock is
  free: the worker that held it is gone (its database session died with it), so nothing is
  still writing; leftover processes and files are removed. It also finds late backups.
- Health (BackupPolicy.health): `failed` after a failed backup or drill, `late` when the newest
  good backup is older than PORTAL_BACKUP_LATE_FACTOR × the interval, else `ok`. Each change to
  failed or late is an alert: a notification (portal/services/notifications.py) and the
  instance named in /healthz.
"""

from __future__ import annotations

import re
import socket
from datetime import datetime, timedelta
from typing import Any

import psycopg
import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from portal.celery import app
from portal.choices import InstanceKind
from portal.errors import Conflict, InvalidPayload, PolicyViolation, TargetUnavailable
from portal.logging import redact_text
from portal.models import Backup, BackupPolicy, Instance, RestoreDrill
from portal.models.backup import BackupHealth, BackupMethod, BackupState, DrillState, DrillTrigger
from portal.personas import is_admin
from portal.selectors.team_checks import drill_team_checks
from provisioning import fanout
from provisioning.backups import drill as drill_engine
from provisioning.backups import logical, physical
from provisioning.backups.storage import storage
from provisioning.backups.tools import BackupError, run, tool
from provisioning.clusters import ClusterError
from provisioning.replicas.local import _kill_and_wait, processes_using

log = structlog.get_logger(__name__)

POLICY_FIELDS = ("enabled", "method", "interval_hours", "retention_count", "retention_days", "drill_interval_hours",
                 "check_queries")
MAX_CHECK_QUERIES = 20
MAX_CHECK_SQL = 4000
_CHECK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# What a backup or drill can fail with: reported, never raised out of the task.
FAILURES = (BackupError, ClusterError, TargetUnavailable, psycopg.Error, OSError, ValueError, KeyError)


def _worker() -> str:
    return socket.gethostname()[:200]


def policy_for(instance: Instance) -> BackupPolicy:
    """The instance's policy, or an unsaved default one (physical for local, logical otherwise)."""
    policy = BackupPolicy.objects.filter(instance=instance).first()
    if policy is None:
        method = BackupMethod.PHYSICAL if instance.kind == InstanceKind.LOCAL else BackupMethod.LOGICAL
        policy = BackupPolicy(instance=instance, enabled=False, method=method)
    return policy


def _policy_body(policy: BackupPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in POLICY_FIELDS}


def _clean_check_queries(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or len(value) > MAX_CHECK_QUERIES:
        raise InvalidPayload.field("check_queries", f"must be a list of at most {MAX_CHECK_QUERIES} queries")
    cleaned = []
    for index, item in enumerate(value):
        where = f"check_queries.{index}"
        if not isinstance(item, dict) or set(item) - {"name", "database", "sql"}:
            raise InvalidPayload.field(where, "must be an object with name, database and sql")
        name, database, text = item.get("name"), item.get("database"), item.get("sql")
        if not isinstance(name, str) or not _CHECK_NAME.match(name):
            raise InvalidPayload.field(f"{where}.name", "1-63 characters: lower-case letters, digits, _ and -")
        if not isinstance(database, str) or not 1 <= len(database.encode()) <= 63:
            raise InvalidPayload.field(f"{where}.database", "a database name of 1 to 63 bytes")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHECK_SQL or "\x00" in text:
            raise InvalidPayload.field(f"{where}.sql", f"one SQL query of at most {MAX_CHECK_SQL} characters")
        cleaned.append({"name": name, "database": database, "sql": text.strip()})
    return cleaned


def backup_policy_set(*, instance: Instance, actor: Any, actor_ip: str | None = None, **changes: Any) -> BackupPolicy:
    """Create or change an instance's policy; only the fields given change."""
    if not is_admin(actor):
        raise PolicyViolation("only platform admins may change backup policies")
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise InvalidPayload.field(sorted(unknown)[0], "unknown field")
    if instance.status == "retired":
        raise Conflict("a retired instance is not backed up")
    if instance.replica_of_id is not None:
        # A standby neither archives (archive_mode=on) nor takes ALTER SYSTEM: back up its primary.
        raise InvalidPayload.field("instance", f"{instance.name} is a replica; back up its primary")
    with transaction.atomic():
        Instance.objects.select_for_update().filter(pk=instance.pk).first()
        policy = policy_for(instance)
        before = _policy_body(policy) if policy.pk else None
        for name, value in changes.items():
            if name == "check_queries":
                value = _clean_check_queries(value)
            setattr(policy, name, value)
        if policy.method not in BackupMethod.values:
            raise InvalidPayload.field("method", f"one of {', '.join(BackupMethod.values)}")
        if policy.method == BackupMethod.PHYSICAL and instance.kind != InstanceKind.LOCAL:
            raise InvalidPayload.field("method", "physical backups are for local instances only; use logical")
        for name, low, high in (("interval_hours", 0.25, 24 * 366), ("retention_days", 0.01, 3660),
                                ("drill_interval_hours", 0, 24 * 366)):
            value = getattr(policy, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidPayload.field(name, f"a number from {low} to {high}")
        if not isinstance(policy.retention_count, int) or isinstance(policy.retention_count, bool) \
                or not 1 <= policy.retention_count <= 1000:
            raise InvalidPayload.field("retention_count", "an integer from 1 to 1000")
        if not isinstance(policy.enabled, bool):
            raise InvalidPayload.field("enabled", "true or false")
        policy.save()
        after = _policy_body(policy)
        record("backup.policy_changed", actor=actor, actor_ip=actor_ip, object_type="backup_policy",
               object_id=policy.pk, instance=instance, outcome="ok",
               details={"instance": instance.name, "before": before, "after": after})
    return policy


def _enqueue(task: str, *args: Any) -> None:
    transaction.on_commit(lambda: app.send_task(task, args=list(args), retry=False))


def backup_request(*, instance: Instance, actor: Any, actor_ip: str | None = None) -> None:
    """Take a backup now (a platform admin's act): the worker does it."""
    if not is_admin(actor):
        raise PolicyViolation("only platform admins may start a backup")
    if instance.status == "retired":
        raise Conflict("a retired instance is not backed up")
    policy = policy_for(instance)
    with transaction.atomic():
        record("backup.requested", actor=actor, actor_ip=actor_ip, object_type="instance", object_id=instance.pk,
               instance=instance, outcome="ok", details={"instance": instance.name, "method": policy.method})
        _enqueue("portal.backup_instance", instance.pk)


def drill_request(*, instance: Instance, actor: Any, actor_ip: str | None = None,
                  target_time: datetime | None = None, trigger: str = DrillTrigger.ON_DEMAND) -> RestoreDrill:
    """A drill row (running) and its task. On demand: platform admins; scheduled: the system."""
    if actor is not None and not is_admin(actor):
        raise PolicyViolation("only platform admins may start a restore drill")
    if target_time is not None and target_time > timezone.now():
        raise InvalidPayload.field("target_time", "must not be in the future")
    if not Backup.objects.filter(instance=instance, state=BackupState.OK, deleted_at__isnull=True).exists():
        raise Conflict("the instance has no good backup to restore")
    with transaction.atomic():
        drill = RestoreDrill.objects.create(instance=instance, trigger=trigger, requested_by=actor,
                                            started_at=timezone.now(), target_time=target_time)
        record("backup.drill_requested", actor=actor, actor_ip=actor_ip, object_type="restore_drill",
               object_id=drill.pk, instance=instance, outcome="ok",
               details={"instance": instance.name, "trigger": trigger,
                        "target_time": target_time.isoformat() if target_time else "latest"})
        _enqueue("portal.restore_drill", drill.pk)
    return drill


# --- health and alerts -------------------------------------------------------------------------
def _set_health(policy: BackupPolicy, health: str, detail: str) -> None:
    """Inside the caller's transaction: a change into failed or late is notified after commit."""
    changed = policy.health != health
    policy.health, policy.health_detail = health, detail[:500]
    BackupPolicy.objects.filter(pk=policy.pk).update(health=health, health_detail=policy.health_detail)
    if changed and health in (BackupHealth.FAILED, BackupHealth.LATE):
        instance_id, text = policy.instance_id, policy.health_detail
        transaction.on_commit(lambda: _notify(instance_id, health, text))


def _notify(instance_id: int, event: str, detail: str) -> None:
    try:
        app.send_task("portal.notify_backup", args=[instance_id, event, detail], retry=False)
    except Exception as exc:  # noqa: BLE001 - a lost notification must never fail a backup's record
        log.warning("notify.enqueue_failed", instance=instance_id, notification=event, error=type(exc).__name__)


# --- backups -------------------------------------------------------------------------------------
def backup_run(instance_id: int) -> str:
    """Take one backup of the instance now (in the worker, under the "backup" fan-out lock)."""
    instance = Instance.objects.filter(pk=instance_id).exclude(status="retired").first()
    if instance is None:
        return "gone"
    # An instance without a saved policy is backed up on demand with the default method.
    policy = policy_for(instance)
    backup = Backup.objects.create(instance=instance, method=policy.method, started_at=timezone.now(),
                                   worker=_worker())
    # The folder is known before anything is written, so a sweep after a kill finds and removes it.
    backup.key = (physical.backup_key if policy.method == BackupMethod.PHYSICAL else logical.backup_key)(
        instance, backup.pk)
    Backup.objects.filter(pk=backup.pk).update(key=backup.key)
    log.info("backup.started", instance=instance.name, backup=backup.pk, method=policy.method)
    try:
        if policy.method == BackupMethod.PHYSICAL:
            archiving = physical.ensure_archiving(instance)
            if archiving["changed"] or not policy.archiving:
                with transaction.atomic():
                    BackupPolicy.objects.filter(pk=policy.pk).update(archiving=True)
                    record("backup.archiving_enabled", object_type="backup_policy", object_id=policy.pk,
                           instance=instance, outcome="ok", details={"instance": instance.name, **archiving})
            result: Any = physical.take(instance, backup.pk)
        else:
            result = logical.take(instance, backup.pk)
    except FAILURES as exc:
        reason = redact_text(str(exc))[:2000] or type(exc).__name__
        with transaction.atomic():
            Backup.objects.filter(pk=backup.pk).update(state=BackupState.FAILED, finished_at=timezone.now(),
                                                       error=reason)
            record("backup.failed", object_type="backup", object_id=backup.pk, instance=instance, outcome="failed",
                   details={"instance": instance.name, "method": policy.method, "reason": reason})
            _set_health(policy, BackupHealth.FAILED, f"backup {backup.pk} failed: {reason}")
        return "failed"
    with transaction.atomic():
        fields = {"state": BackupState.OK, "finished_at": timezone.now(), "key": result.key,
                  "size_bytes": result.size_bytes, "checksum": result.checksum, "verified": True,
                  "verify_output": result.verify_output, "row_counts": result.row_counts,
                  "databases": result.databases}
        if policy.method == BackupMethod.PHYSICAL:
            fields.update(wal_start=result.wal_start, wal_end=result.wal_end, wal_start_file=result.wal_start_file)
        # Only a row still running becomes ok: a sweep that already failed it wins.
        done = Backup.objects.filter(pk=backup.pk, state=BackupState.RUNNING).update(**fields)
        if not done:
            return "swept"
        record("backup.taken", object_type="backup", object_id=backup.pk, instance=instance, outcome="ok",
               details={"instance": instance.name, "method": policy.method, "key": result.key,
                        "size_bytes": result.size_bytes, "checksum": result.checksum,
                        "wal_start": fields.get("wal_start", ""), "wal_end": fields.get("wal_end", "")})
        _set_health(policy, BackupHealth.OK, f"backup {backup.pk} verified")
    backup_retention(instance)
    return "ok"


def backup_retention(instance: Instance, *, now: datetime | None = None) -> list[int]:
    """Delete good backups beyond the policy's count that are older than its age; failed ones
    past the age too. Then WAL older than the oldest kept base backup (pg_archivecleanup)."""
    policy = BackupPolicy.objects.filter(instance=instance).first()
    if policy is None:
        return []
    now = now or timezone.now()
    cutoff = now - timedelta(days=policy.retention_days)
    good = list(Backup.objects.filter(instance=instance, state=BackupState.OK, deleted_at__isnull=True)
                .order_by("-started_at"))
    expired = [b for b in good[policy.retention_count:] if b.started_at < cutoff]
    expired += list(Backup.objects.filter(instance=instance, state=BackupState.FAILED, deleted_at__isnull=True,
                                          started_at__lt=cutoff))
    deleted = []
    for backup in expired:
        if backup.key:
            storage().delete(backup.key)
        with transaction.atomic():
            Backup.objects.filter(pk=backup.pk).update(deleted_at=now)
            record("backup.deleted", object_type="backup", object_id=backup.pk, instance=instance,
                   outcome="expired", details={"instance": instance.name, "key": backup.key,
                                               "retention_count": policy.retention_count,
                                               "retention_days": policy.retention_days})
        deleted.append(backup.pk)
    kept = [b for b in good if b.pk not in deleted and b.wal_start_file]
    if deleted and kept and policy.method == BackupMethod.PHYSICAL:
        try:
            run([tool("pg_archivecleanup"), str(physical.archive_folder(instance)), kept[-1].wal_start_file],
                as_service=True)
        except FAILURES as exc:
            log.warning("backup.archive_cleanup_failed", instance=instance.name, error=str(exc))
    return deleted


def _kill_leftovers(key: str) -> None:
    if key:
        _kill_and_wait(processes_using(storage().path(key)))


def backup_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Fail running backups and drills whose worker is gone; mark late backups."""
    now = now or timezone.now()
    swept = {"backups": 0, "drills": 0, "late": 0}
    for instance_id in set(Backup.objects.filter(state=BackupState.RUNNING).values_list("instance_id", flat=True)):
        with fanout.instance_lock("backup", instance_id) as free:
            if not free:
                continue  # a live worker holds it: its backup is really running
            for backup in Backup.objects.filter(instance_id=instance_id, state=BackupState.RUNNING):
                # Whatever the dead worker started (pg_basebackup, pg_dump) stops; its half-written files go.
                _kill_leftovers(backup.key)
                if backup.key:
                    storage().delete(backup.key)
                reason = "the worker ended before the backup was verified (killed or lost)"
                with transaction.atomic():
                    if not Backup.objects.filter(pk=backup.pk, state=BackupState.RUNNING).update(
                            state=BackupState.FAILED, finished_at=now, error=reason):
                        continue
                    record("backup.failed", object_type="backup", object_id=backup.pk, instance=backup.instance,
                           outcome="failed", details={"instance": backup.instance.name, "reason": reason,
                                                      "worker": backup.worker})
                    policy = BackupPolicy.objects.filter(instance_id=instance_id).first()
                    if policy is not None:
                        _set_health(policy, BackupHealth.FAILED, f"backup {backup.pk} failed: {reason}")
                swept["backups"] += 1
    for instance_id in set(RestoreDrill.objects.filter(state=DrillState.RUNNING).values_list("instance_id", flat=True)):
        with fanout.instance_lock("drill", instance_id) as free:
            if not free:
                continue
            # Drills queued but not started yet are left for their task, unless clearly abandoned.
            stale = RestoreDrill.objects.filter(instance_id=instance_id, state=DrillState.RUNNING,
                                                started_at__lt=now - timedelta(hours=2))
            for drill in stale:
                _drill_finish(drill, drill_engine.DrillResult(ok=False, error="the worker ended before the drill did"))
                swept["drills"] += 1
    for policy in BackupPolicy.objects.filter(enabled=True).select_related("instance").exclude(
            instance__status="retired"):
        newest = (Backup.objects.filter(instance=policy.instance, state=BackupState.OK)
                  .order_by("-started_at").values_list("started_at", flat=True).first())
        since = newest or policy.updated_at
        allowed = timedelta(hours=policy.interval_hours * float(settings.BACKUP_LATE_FACTOR))
        if since < now - allowed and policy.health != BackupHealth.FAILED:
            with transaction.atomic():
                if policy.health != BackupHealth.LATE:
                    record("backup.late", object_type="backup_policy", object_id=policy.pk, instance=policy.instance,
                           outcome="late", details={"instance": policy.instance.name,
                                                    "newest_ok": newest.isoformat() if newest else None})
                _set_health(policy, BackupHealth.LATE,
                            f"no good backup since {since.isoformat(timespec='seconds')}")
            swept["late"] += 1
    return swept


def backup_schedule(*, now: datetime | None = None) -> dict[str, int]:
    """Beat: enqueue the backups and drills that are due, then sweep."""
    now = now or timezone.now()
    due = {"backups": 0, "drills": 0}
    for policy in BackupPolicy.objects.filter(enabled=True).select_related("instance").exclude(
            instance__status__in=["retired", "provisioning"]):
        last = (Backup.objects.filter(instance=policy.instance).exclude(state=BackupState.FAILED)
                .order_by("-started_at").values_list("started_at", flat=True).first())
        if last is None or last <= now - timedelta(hours=policy.interval_hours):
            # Expires with the period: a backlog behind busy workers is re-sent once, not piled up.
            app.send_task("portal.backup_instance", args=[policy.instance_id], retry=False, expires=60)
            due["backups"] += 1
        if policy.drill_interval_hours > 0:
            last_drill = (RestoreDrill.objects.filter(instance=policy.instance).order_by("-started_at")
                          .values_list("started_at", flat=True).first())
            if last_drill is None or last_drill <= now - timedelta(hours=policy.drill_interval_hours):
                try:
                    drill_request(instance=policy.instance, actor=None, trigger=DrillTrigger.SCHEDULED)
                    due["drills"] += 1
                except Conflict:
                    pass  # no good backup yet: the first backup comes first
    backup_sweep(now=now)
    return due


# --- drills --------------------------------------------------------------------------------------
def _drill_finish(drill: RestoreDrill, result: Any) -> None:
    passed = result.ok and not result.error
    with transaction.atomic():
        if not RestoreDrill.objects.filter(pk=drill.pk, state=DrillState.RUNNING).update(
                state=DrillState.PASSED if passed else DrillState.FAILED, finished_at=timezone.now(),
                checks=result.checks, rto_seconds=result.rto_seconds, rpo_seconds=result.rpo_seconds,
                restored_to=result.restored_to, error=result.error[:2000]):
            return
        failed_checks = [c["name"] for c in result.checks if not c["ok"]]
        details = {"instance": drill.instance.name, "backup": drill.backup_id, "rto_seconds": result.rto_seconds,
                   "rpo_seconds": result.rpo_seconds, "failed_checks": failed_checks,
                   "target_time": drill.target_time.isoformat() if drill.target_time else "latest"}
        if passed:
            record("backup.drill_passed", object_type="restore_drill", object_id=drill.pk, instance=drill.instance,
                   outcome="ok", details=details)
        else:
            details["reason"] = result.error or f"failed checks: {', '.join(failed_checks)}"
            record("backup.drill_failed", object_type="restore_drill", object_id=drill.pk, instance=drill.instance,
                   outcome="failed", details=details)
            policy = BackupPolicy.objects.filter(instance=drill.instance).first()
            if policy is not None:
                _set_health(policy, BackupHealth.FAILED, f"restore drill {drill.pk} failed: {details['reason']}")


def backup_for_target(instance: Instance, target_time: datetime | None) -> Backup | None:
    """The newest good backup that ended before the target (any, for "latest")."""
    backups = Backup.objects.filter(instance=instance, state=BackupState.OK, deleted_at__isnull=True)
    if target_time is not None:
        backups = backups.filter(finished_at__lte=target_time)
    return backups.order_by("-started_at").first()


def drill_run(drill_id: int) -> str:
    """Run one drill (in the worker, under the "drill" fan-out lock)."""
    drill = RestoreDrill.objects.select_related("instance").filter(pk=drill_id, state=DrillState.RUNNING).first()
    if drill is None:
        return "gone"
    instance = drill.instance
    backup = backup_for_target(instance, drill.target_time)
    if backup is None:
        _drill_finish(drill, drill_engine.DrillResult(ok=False, error="no good backup ended before the target"))
        return "failed"
    RestoreDrill.objects.filter(pk=drill.pk).update(backup=backup, started_at=timezone.now())
    drill.backup = backup
    policy = policy_for(instance)
    engine = drill_engine.drill_physical if backup.method == BackupMethod.PHYSICAL else drill_engine.drill_logical
    try:
        result = engine(drill_id=drill.pk, instance=instance, backup=backup, target_time=drill.target_time,
                        check_queries=policy.check_queries or [], team_checks=drill_team_checks(instance))
    except FAILURES as exc:
        result = drill_engine.DrillResult(ok=False, error=redact_text(str(exc))[:2000] or type(exc).__name__)
    _drill_finish(drill, result)
    return "passed" if result.ok and not result.error else "failed"

