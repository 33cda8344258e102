"""The Celery application: broker from settings, tasks from the apps, beat schedule."""

import os
from typing import Any

import structlog
from celery import Celery
from celery.signals import (
    beat_embedded_init,
    beat_init,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")

app = Celery("dbportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["portal", "provisioning", "audit"])


def beat_schedule() -> dict[str, dict[str, Any]]:
    """What beat runs, and how often (the outbox sweep's period from settings, OUTBOX_SWEEP_SECONDS)."""
    from django.conf import settings  # read when Celery loads its configuration, not at import

    return {
        "instances.refresh_status": {"task": "portal.refresh_instance_status", "schedule": 30.0},
        # provisioning: re-send untaken outbox rows, recover requests whose worker died
        "provisioning.outbox_sweep": {"task": "provisioning.outbox_sweep", "schedule": settings.OUTBOX_SWEEP_SECONDS},
        "provisioning.expire_grants": {"task": "provisioning.expire_grants", "schedule": 30.0},
        "portal.offboard_sweep": {"task": "portal.offboard_sweep", "schedule": 3600.0},
        # single sign-on: the provider asked about every linked user (a no-op while off)
        "portal.identity_check": {"task": "portal.identity_check",
                                  "schedule": 60.0 * (settings.OIDC_CHECK_MINUTES or 60)},
        "provisioning.drift_scan": {"task": "provisioning.drift_scan", "schedule": 600.0},
        "provisioning.secret_wipe": {"task": "provisioning.secret_wipe", "schedule": 300.0},
        "provisioning.rotate_executor_logins": {"task": "provisioning.rotate_executor_logins", "schedule": 3600.0},
        "provisioning.inventory_refresh": {"task": "provisioning.inventory_refresh", "schedule": 300.0},
        # who is connected (last seen, evidence for access reviews): one task per instance
        "provisioning.sample_activity": {"task": "provisioning.sample_activity",
                                         "schedule": settings.ACTIVITY_SAMPLE_SECONDS},
        "replicas.refresh": {"task": "provisioning.refresh_replicas", "schedule": 15.0},
        # monitoring (#21): one sample task per instance; raw samples folded hourly, then retention
        "monitoring.sample": {"task": "portal.monitoring_sample", "schedule": settings.MONITORING_SAMPLE_SECONDS,
                              "options": {"expires": max(settings.MONITORING_SAMPLE_SECONDS, 1.0)}},
        "monitoring.compact": {"task": "portal.monitoring_compact", "schedule": 3600.0},
        # backups and restore drills (#20): what is due, then the sweep of killed runs and late backups
        "backups.schedule": {"task": "portal.backup_schedule", "schedule": 60.0, "options": {"expires": 60.0}},
        # the data dictionary of every managed database (#21): one task per primary instance
        "dictionary.refresh": {"task": "portal.dictionary_refresh", "schedule": 60.0 * settings.DICTIONARY_REFRESH_MINUTES,
                               "options": {"expires": 60.0 * settings.DICTIONARY_REFRESH_MINUTES}},
        "break_glass.overdue": {"task": "portal.break_glass_overdue", "schedule": 300.0},
        # the dashboard's request counters (#23): the triggers' deltas added to the counters
        "requests.fold_counts": {"task": "portal.fold_request_counts", "schedule": 60.0, "options": {"expires": 60.0}},
        # access reviews (#18): reminders before a campaign's deadline, its action on unanswered items after
        "access_reviews.remind": {"task": "portal.access_reviews_remind", "schedule": 3600.0},
        "access_reviews.deadlines": {"task": "portal.access_reviews_deadlines", "schedule": 300.0},
        # audit: forward the log to the configured SIEM collectors (audit/siem.py)
        # (a tick not taken within one interval is dropped: a run already forwards until caught up)
        "audit.siem_forward": {"task": "audit.siem_forward", "schedule": settings.SIEM_INTERVAL_SECONDS,
                               "options": {"expires": max(settings.SIEM_INTERVAL_SECONDS, 1.0)}},
        # audit retention (audit/archive.py): archives whole months past the online window, so most
        # runs find nothing due (two queries); often enough that a month is archived on its first day
        "audit.archive_run": {"task": "audit.archive_run", "schedule": 6 * 3600.0},
        # audit chain (audit/chainer.py): what the writers' own after-commit chainers left, every
        # second; a signed checkpoint when one is due (PORTAL_AUDIT_CHECKPOINT_EVENTS / _MINUTES)
        "audit.chain": {"task": "audit.chain", "schedule": 1.0},
        "audit.checkpoint": {"task": "audit.checkpoint", "schedule": 30.0},
    }


@app.on_after_configure.connect
def _set_beat_schedule(sender: Celery, **_: Any) -> None:
    # Not at import: this module is imported while the settings module itself is being imported
    # (portal/__init__.py), so reading a setting here would read a half-built module.
    sender.conf.beat_schedule = beat_schedule()


@celeryd_init.connect
@beat_init.connect
def _ensure_embedded_servers(**_: Any) -> None:
    """A worker or beat on the embedded defaults (no DATABASE_URL / REDIS_URL) starts them, as
    manage.py does; importing settings starts nothing. `make run` passes both URLs: no-op there."""
    # Inside: this module is imported by portal/__init__.py, before Django's settings and apps load.
    from portal.embedded import ensure_embedded

    ensure_embedded()


@worker_ready.connect
def _record_worker_started(sender: Any = None, **_: Any) -> None:
    """The audit machinery's start is an event (PCI DSS 10.2.1.6, audit.lifecycle)."""
    from audit.lifecycle import machinery_started

    machinery_started("worker", hostname=getattr(sender, "hostname", None))


@worker_shutdown.connect
def _record_worker_stopped(sender: Any = None, **_: Any) -> None:
    from audit.lifecycle import machinery_stopped

    try:
        machinery_stopped("worker", hostname=getattr(sender, "hostname", None))
    except Exception:  # noqa: BLE001 - a stop with the database gone: the next start names it
        structlog.get_logger(__name__).warning("audit.machinery_stop_not_recorded", component="worker")


@beat_init.connect
def _record_beat_started(**_: Any) -> None:
    """Beat has no shutdown signal: its orderly stop is recorded at interpreter exit."""
    import atexit

    from audit.lifecycle import machinery_started, machinery_stopped

    machinery_started("beat")

    def stopped() -> None:
        try:
            machinery_stopped("beat")
        except Exception:  # noqa: BLE001 - see _record_worker_stopped
            structlog.get_logger(__name__).warning("audit.machinery_stop_not_recorded", component="beat")

    atexit.register(stopped)


@beat_embedded_init.connect
def _record_embedded_beat_started(**_: Any) -> None:
    """A worker's embedded beat (-B) starts and stops with its worker, whose stop is recorded."""
    from audit.lifecycle import machinery_started

    machinery_started("beat")


@setup_logging.connect
def _log_through_django_settings(**_: Any) -> None:
    """Workers and beat log through settings.LOGGING, like the web: structlog's JSON lines
    (console lines in development), secrets redacted.

    Celery sets up logging of its own only when nobody answers this signal; it would put its
    handler and format on the root logger and wrap every structlog line in them. Answering it
    also keeps Celery from redirecting stdout to a logger. The level comes from
    PORTAL_LOG_LEVEL, not from celery's -l option.
    """
    # Inside: this module is imported by portal/__init__.py, before Django's settings and apps load.
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


@task_prerun.connect
def _bind_task_log_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """A worker process runs task after task in one context: start each task's log lines clean,
    so nothing a task bound (a request id, a marker) shows on the next task's lines, and name it."""
    if task is not None and getattr(task.request, "is_eager", False):
        return  # run inline by a caller (web request, shell): its context is the caller's, leave it
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_name=getattr(task, "name", None), task_id=task_id)


@task_postrun.connect
def _clear_task_log_context(task: Any = None, **_: Any) -> None:
    """Also clear after the task: worker lines between tasks (the next "received") belong to none."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    structlog.contextvars.clear_contextvars()
