"""A worker killed in the middle of a backup leaves no catalog entry claiming success (issue #20):
the row stays `running` until the sweep sees the instance's backup lock free and fails it."""

from __future__ import annotations

import time

import pytest

from audit.models import AuditEvent
from portal.celery import app
from portal.models import Backup, BackupPolicy
from portal.services.backups import backup_policy_set, backup_sweep
from provisioning.backups.storage import storage
from tests.fixtures.celery import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_killed_in_a_backup_leaves_no_success_entry(people, backup_instance, celery_workers):
    # given a worker whose backups are throttled to 32 kB/s, so one takes minutes
    backup_policy_set(instance=backup_instance, actor=people["admin"], enabled=False, method="physical")
    worker = celery_workers.start(beat=False, env={"PORTAL_BACKUP_MAX_RATE": "32k"})
    app.send_task("portal.backup_instance", args=[backup_instance.pk])

    # when it is killed while pg_basebackup writes
    def writing() -> bool:
        backup = Backup.objects.filter(instance=backup_instance).first()
        return bool(backup and backup.key and (storage().path(backup.key) / "base").exists())

    wait_until(writing, timeout=90, message="the backup writing its files")
    time.sleep(1)
    worker.kill()

    # then nothing claims success, and the sweep fails the row once the lock is free
    backup = Backup.objects.get(instance=backup_instance)
    assert backup.state == "running" and not backup.verified
    wait_until(lambda: backup_sweep()["backups"] == 1 or Backup.objects.get(pk=backup.pk).state == "failed",
               timeout=30, message="the sweep failing the killed backup")
    backup.refresh_from_db()
    assert backup.state == "failed" and "worker ended" in backup.error
    assert not Backup.objects.filter(instance=backup_instance, state="ok").exists()
    assert not storage().path(backup.key).exists()
    event = AuditEvent.objects.get(action="backup.failed", object_id=str(backup.pk))
    assert event.outcome == "failed" and event.details["reason"]
    assert BackupPolicy.objects.get(instance=backup_instance).health == "failed"
    # a second sweep changes nothing
    assert backup_sweep()["backups"] == 0
