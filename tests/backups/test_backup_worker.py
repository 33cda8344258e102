"""Backups and drills through the API and a real Celery worker (issue #20): the admin's "back up now"
and "drill now" are taken by the worker, the catalog and the drill history show the results."""

from __future__ import annotations

import pytest

from portal.models import Backup, RestoreDrill
from tests.fixtures.celery import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_backup_and_drill_now_run_in_the_worker(api_for, backup_instance, celery_workers):
    celery_workers.start(beat=False)
    admin = api_for("admin")
    policy = admin.put(f"/api/v1/instances/{backup_instance.pk}/backup-policy/",
                       {"enabled": False, "method": "physical"}, format="json")
    assert policy.status_code == 200
    assert admin.post(f"/api/v1/instances/{backup_instance.pk}/backups/").status_code == 202
    wait_until(lambda: Backup.objects.filter(instance=backup_instance, state="ok").exists(), timeout=120,
               message="the worker's backup")
    catalog = admin.get(f"/api/v1/instances/{backup_instance.pk}/backups/").json()["results"]
    assert catalog[0]["state"] == "ok" and catalog[0]["verified"] and catalog[0]["wal_end"]

    queued = admin.post(f"/api/v1/instances/{backup_instance.pk}/drills/", {}, format="json")
    assert queued.status_code == 202 and queued.json()["state"] == "running"
    drill_id = queued.json()["id"]
    wait_until(lambda: RestoreDrill.objects.get(pk=drill_id).state != "running", timeout=180,
               message="the worker's drill")
    drills = api_for("carol").get(f"/api/v1/instances/{backup_instance.pk}/drills/").json()["results"]
    assert drills[0]["id"] == drill_id and drills[0]["state"] == "passed", drills[0]["checks"]
    assert drills[0]["rto_seconds"] > 0 and drills[0]["rpo_seconds"] is not None
