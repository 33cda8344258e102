"""Celery tasks of the provisioning engine: thin, by id, calling the module that does the work."""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from portal.errors import TargetUnavailable
from portal.models import Instance
from provisioning import activity, drift, engine, executor_logins, expiry, fanout, inventory, outbox
from provisioning import secrets as request_secrets
from provisioning.errors import TransientTargetError

log = structlog.get_logger(__name__)


@shared_task(bind=True, name="provisioning.apply_request", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def apply_request(self, request_id: int, plan_hash: str, companions: list[int] | None = None) -> engine.Outcome:
    """Apply one request (and its `companions`: requests queued with it for the same database,
    claimed with it); a transient target error retries it with capped, jittered backoff.

    The retry is written out rather than given to the decorator (autoretry_for, max_retries,
    retry_backoff_max) because decorator options are read once, at import: here
    PROVISIONING_MAX_RETRIES and PROVISIONING_RETRY_BACKOFF_MAX are read per attempt, and the
    countdown is the one Celery's retry_backoff=True, retry_jitter=True would compute.
    """
    max_retries = settings.PROVISIONING_MAX_RETRIES
    try:
        return engine.apply(
            request_id=request_id,
            plan_hash=plan_hash,
            worker=self.request.hostname or "worker",
            final_attempt=self.request.retries >= max_retries,
            companions=companions,
        )
    except TransientTargetError as exc:
        countdown = get_exponential_backoff_interval(factor=1, retries=self.request.retries,
                                                     maximum=settings.PROVISIONING_RETRY_BACKOFF_MAX, full_jitter=True)
        # Past max_retries, Celery re-raises `exc` itself: the task fails with the target's error.
        raise self.retry(exc=exc, countdown=countdown, max_retries=max_retries) from exc


@shared_task(name="provisioning.outbox_sweep", ignore_result=True)
def outbox_sweep() -> dict:
    return outbox.outbox_sweep()


@shared_task(name="provisioning.secret_wipe", ignore_result=True)
def secret_wipe() -> int:
    return request_secrets.secret_wipe_expired()


@shared_task(name="provisioning.rotate_executor_logins", ignore_result=True)
def rotate_executor_logins() -> int:
    """New passwords for the executor logins older than PORTAL_EXECUTOR_LOGIN_ROTATE_DAYS."""
    return executor_logins.rotate_due()


@shared_task(name="provisioning.inventory_refresh", ignore_result=True)
def inventory_refresh() -> int:
    """Beat job: one inventory task per instance (databases, schemas, roles, tables; fanout.py)."""
    ids = list(Instance.objects.exclude(status="retired").order_by("name").values_list("pk", flat=True))
    return fanout.dispatch(inventory_refresh_instance, ids)


@shared_task(name="provisioning.inventory_refresh_instance", ignore_result=True, expires=300, soft_time_limit=240)
def inventory_refresh_instance(instance_id: int) -> Any:
    instance = fanout.live_instance(instance_id)
    if instance is None:
        return None

    # An unreachable instance keeps its last inventory and is only logged (it heals next period).
    return fanout.run_locked("inventory", instance_id, lambda: inventory.inventory_refresh_quietly(instance))


@shared_task(name="provisioning.expire_grants", ignore_result=True)
def expire_grants() -> list[int]:
    return expiry.expire_grants()


@shared_task(name="provisioning.drift_scan", ignore_result=True)
def drift_scan() -> int:
    """Beat job: one drift scan task per primary instance (replicas mirror theirs; fanout.py)."""
    ids = drift.scanned_instance_ids()
    return fanout.dispatch(drift_scan_instance, ids)


@shared_task(name="provisioning.drift_scan_instance", ignore_result=True, expires=600, soft_time_limit=540)
def drift_scan_instance(instance_id: int) -> Any:
    """Scan one instance (an unreachable one is reported by drift_scan_all, not raised)."""
    instance = fanout.live_instance(instance_id)
    if instance is None:
        return None
    return fanout.run_locked("drift", instance_id, lambda: drift.drift_scan_all(instance=instance))


@shared_task(name="provisioning.sample_activity", ignore_result=True)
def sample_activity() -> int:
    """Beat job: one sampling task per instance (an unreachable one delays only its own task)."""
    ids = activity.sampled_instances()
    return fanout.dispatch(sample_instance_activity, ids)


# A sample is worth nothing late: it expires rather than queue up behind a backlog, and a
# connect that hangs is bounded by the connection's own timeouts (provisioning/activity.py).
@shared_task(name="provisioning.sample_instance_activity", ignore_result=True, expires=300, soft_time_limit=60)
def sample_instance_activity(instance_id: int) -> int:
    """Record which roles are connected to one instance now (RoleLastSeen)."""
    instance = fanout.live_instance(instance_id)
    if instance is None:
        return 0

    def work() -> int:
        try:
            return activity.sample_instance(instance)
        except TargetUnavailable as exc:
            log.warning("activity.sample_failed", instance=instance_id, error=exc.detail)
            return 0

    result = fanout.run_locked("activity", instance_id, work)
    return 0 if result == fanout.SKIPPED else result
