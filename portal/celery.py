"""The Celery application: broker from settings, tasks from the apps, beat schedule."""

import os

from celery import Celery
from celery.schedules import crontab  # noqa: F401 - used by schedules added in settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")

app = Celery("dbportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["portal", "provisioning", "provisioning.replicas", "audit"])

app.conf.beat_schedule = {
    "instances.refresh_status": {"task": "portal.refresh_instance_status", "schedule": 30.0},
    # provisioning: re-send untaken outbox rows, recover requests whose worker died
    "provisioning.outbox_sweep": {"task": "provisioning.outbox_sweep", "schedule": float(os.environ.get("PORTAL_OUTBOX_SWEEP_SECONDS", "5"))},
    "provisioning.expire_grants": {"task": "provisioning.expire_grants", "schedule": 30.0},
    "provisioning.drift_scan": {"task": "provisioning.drift_scan", "schedule": 600.0},
    "provisioning.secret_wipe": {"task": "provisioning.secret_wipe", "schedule": 300.0},
    "provisioning.inventory_refresh": {"task": "provisioning.inventory_refresh", "schedule": 300.0},
    "replicas.refresh": {"task": "provisioning.refresh_replicas", "schedule": 15.0},
}
