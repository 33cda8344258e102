"""Portal tasks: housekeeping run by beat, and the notifications; thin, each calls one service."""

import structlog
from celery import shared_task
from django.conf import settings

from portal.models import Instance, RestoreDrill
from portal.selectors.dashboard import fold_request_counts
from portal.services.access_review_decisions import campaigns_process_deadlines, campaigns_send_reminders
from portal.services.backups import backup_run, backup_schedule, drill_run
from portal.services.breakglass import break_glass_overdue
from portal.services.dictionary import dictionary_refresh
from portal.services.identity import identity_check
from portal.services.instances import instance_refresh_status
from portal.services.monitoring import monitoring_compact, sample_failure_store, sample_store
from portal.services.notifications import alert_notify_send, backup_notify_send, notify_send, notify_send_many
from portal.services.offboarding import offboard_sweep
from portal.services.replicas import replica_refresh, replica_watched, replicas_watched_ids
from provisioning import fanout, monitoring

log = structlog.get_logger(__name__)


@shared_task(name="portal.refresh_instance_status", ignore_result=True)
def refresh_instance_status() -> int:
    """Beat job: one status probe task per primary instance (provisioning/fanout.py)."""
    # Replicas (and instances being built) are watched by provisioning.refresh_replicas (below).
    ids = list(Instance.objects.exclude(status__in=["retired", "provisioning"]).filter(replica_of__isnull=True)
               .order_by("name").values_list("pk", flat=True))
    return fanout.dispatch(refresh_one_instance_status, ids)


@shared_task(name="portal.refresh_one_instance_status", ignore_result=True, expires=30, soft_time_limit=25)
def refresh_one_instance_status(instance_id: int) -> str | None:
    """Reachable / unreachable and the version of one instance."""
    instance = fanout.live_instance(instance_id)
    if instance is None:
        return None
    result = fanout.run_locked("status", instance_id, lambda: instance_refresh_status(instance))
    return result if isinstance(result, str) else instance.status


@shared_task(name="portal.identity_check", ignore_result=True)
def identity_check_task() -> dict:
    """Beat job: ask the identity provider about every linked user (PORTAL_OIDC_CHECK_MINUTES; off: nothing)."""
    return identity_check()


@shared_task(name="portal.offboard_sweep", ignore_result=True)
def offboarding_sweep() -> list[int]:
    """Beat job: inactive users who still hold access the portal gave them are offboarded again."""
    return offboard_sweep()


@shared_task(name="portal.notify_request", ignore_result=True)
def notify_request(request_id: int, event: str) -> None:
    """E-mail and webhook for one request transition (see portal.services.notifications)."""
    notify_send(request_id, event)


@shared_task(name="portal.notify_requests", ignore_result=True)
def notify_requests(request_ids: list[int], event: str) -> None:
    """The same transition of several requests (applied together in one batch)."""
    notify_send_many(request_ids, event)


# Named provisioning.* as beat has always scheduled it; it lives here because it calls a portal
# service (provisioning imports no service: the layers contract in pyproject.toml).
@shared_task(name="provisioning.refresh_replicas", ignore_result=True)
def refresh_replicas() -> int:
    """Beat job: one health task per watched replica (state and lag; provisioning/fanout.py)."""
    ids = replicas_watched_ids()
    return fanout.dispatch(refresh_replica, ids)


@shared_task(name="provisioning.refresh_replica", ignore_result=True, expires=15, soft_time_limit=14)
def refresh_replica(replica_id: int) -> None:
    """One replica's state and lag (bytes from the primary, seconds from the standby)."""
    replica = replica_watched(replica_id)
    if replica is not None:
        fanout.run_locked("replica", replica_id, lambda: replica_refresh(replica))


@shared_task(name="portal.fold_request_counts", ignore_result=True, expires=60)
def fold_request_counts_task() -> None:
    """Beat job: fold the request counters' deltas (portal/selectors/dashboard.py) even while no one
    opens a dashboard or the team list, which fold them too: they stay a minute's worth of rows."""
    fold_request_counts()


@shared_task(name="portal.break_glass_overdue", ignore_result=True)
def break_glass_overdue_notify() -> list[int]:
    """Beat job: notify reviewers (once) of break-glass requests whose post-hoc review is overdue."""
    return break_glass_overdue()


@shared_task(name="portal.access_reviews_remind", ignore_result=True)
def access_reviews_remind() -> list[int]:
    """Beat job: e-mail and webhook reminders of open access review campaigns (once a day each)."""
    return campaigns_send_reminders()


@shared_task(name="portal.access_reviews_deadlines", ignore_result=True)
def access_reviews_deadlines() -> list[int]:
    """Beat job: each campaign past its deadline revokes or escalates its unanswered items, once."""
    return campaigns_process_deadlines()


@shared_task(name="portal.monitoring_sample", ignore_result=True)
def monitoring_sample() -> int:
    """Beat job: one monitoring sample task per instance (provisioning/fanout.py); each expires
    after one period, so a backlog behind a stalled worker is dropped rather than run late."""
    ids = list(Instance.objects.exclude(status__in=["retired", "provisioning"]).order_by("pk")
               .values_list("pk", flat=True))
    period = max(float(settings.MONITORING_SAMPLE_SECONDS), 1.0)
    return fanout.dispatch(monitoring_sample_instance, ids, expires=period)


# The soft limit bounds a sample that hangs past its connection and statement timeouts
# (provisioning/monitoring.py: 3 s connect, 5 s per statement, one connection per database).
@shared_task(name="portal.monitoring_sample_instance", ignore_result=True, soft_time_limit=55)
def monitoring_sample_instance(instance_id: int) -> str | None:
    """Sample one instance and store it (its alerts evaluated with it); a failure is a sample too."""
    instance = Instance.objects.exclude(status__in=["retired", "provisioning"]).filter(pk=instance_id).first()
    if instance is None:
        return None

    def work() -> str:
        try:
            body, duration_ms = monitoring.take_sample(instance)
        except monitoring.SampleFailed as exc:
            log.warning("monitoring.sample_failed", instance=instance_id, error=str(exc))
            sample_failure_store(instance, str(exc))
            return "failed"
        sample_store(instance, body, duration_ms=duration_ms)
        return "ok"

    return fanout.run_locked("monitoring", instance_id, work)


@shared_task(name="portal.monitoring_compact", ignore_result=True)
def monitoring_compact_task() -> dict:
    """Beat job: raw samples into hourly rows past PORTAL_MONITORING_RAW_HOURS; retention."""
    return monitoring_compact()


@shared_task(name="portal.backup_schedule", ignore_result=True)
def backup_schedule_task() -> dict:
    """Beat job: enqueue the backups and drills that are due (one task per instance), then the
    sweep of backups and drills whose worker died, and of late backups (portal/services/backups.py)."""
    return backup_schedule()


# Not acks_late: a backup whose worker died is failed by the sweep and taken afresh at the next
# period, rather than redelivered into a half-written folder.
@shared_task(name="portal.backup_instance", ignore_result=True)
def backup_instance(instance_id: int) -> str:
    """One backup of one instance, under the instance's "backup" fan-out lock."""
    return fanout.run_locked("backup", instance_id, lambda: backup_run(instance_id))


@shared_task(name="portal.restore_drill", ignore_result=True)
def restore_drill(drill_id: int) -> str:
    """One restore drill, under its instance's "drill" fan-out lock."""
    instance_id = RestoreDrill.objects.filter(pk=drill_id).values_list("instance_id", flat=True).first()
    if instance_id is None:
        return "gone"
    return fanout.run_locked("drill", instance_id, lambda: drill_run(drill_id))


@shared_task(name="portal.notify_backup", ignore_result=True)
def notify_backup(instance_id: int, event: str, detail: str) -> None:
    """E-mail reviewers and admins that an instance's backups failed or are late."""
    backup_notify_send(instance_id, event, detail)


@shared_task(name="portal.notify_alert", ignore_result=True)
def notify_alert(alert_id: int, event: str) -> None:
    """E-mail and webhooks for a monitoring alert opened or resolved."""
    alert_notify_send(alert_id, event)


@shared_task(name="portal.dictionary_refresh", ignore_result=True)
def dictionary_refresh_all() -> int:
    """Beat job: one data dictionary task per primary instance (replicas mirror their primary)."""
    ids = list(Instance.objects.exclude(status__in=["retired", "provisioning"]).filter(replica_of__isnull=True)
               .order_by("pk").values_list("pk", flat=True))
    period = 60.0 * float(settings.DICTIONARY_REFRESH_MINUTES)
    return fanout.dispatch(dictionary_refresh_instance, ids, expires=period)


@shared_task(name="portal.dictionary_refresh_instance", ignore_result=True, soft_time_limit=300)
def dictionary_refresh_instance(instance_id: int) -> dict | str | None:
    """Snapshot the dictionary of every managed database of one instance."""
    instance = Instance.objects.exclude(status__in=["retired", "provisioning"]).filter(pk=instance_id).first()
    if instance is None:
        return None
    return fanout.run_locked("dictionary", instance_id, lambda: dictionary_refresh(instance))
