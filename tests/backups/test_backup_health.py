"""Backup health (issue #20): a failed backup is a failed catalog row, an audit event, red health and
an e-mail; retention by count and age; late backups found by the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from portal.models import Backup, BackupPolicy, Instance
from portal.services.backups import backup_retention, backup_run, backup_sweep
from portal.services.notifications import backup_notify_send
from provisioning.backups.storage import storage

pytestmark = pytest.mark.django_db


def test_a_backup_that_fails_is_recorded_failed_with_its_reason_and_turns_the_health_red(people, backup_instance):
    BackupPolicy.objects.create(instance=backup_instance, method="physical", health="ok")
    Instance.objects.filter(pk=backup_instance.pk).update(data_dir=str(backup_instance.data_dir) + "-gone")
    assert backup_run(backup_instance.pk) == "failed"
    backup = Backup.objects.get(instance=backup_instance)
    assert backup.state == "failed" and backup.error and not backup.verified and backup.finished_at
    event = AuditEvent.objects.get(action="backup.failed", object_id=str(backup.pk))
    assert event.outcome == "failed" and event.details["reason"]
    policy = BackupPolicy.objects.get(instance=backup_instance)
    assert policy.health == "failed" and f"backup {backup.pk} failed" in policy.health_detail


def test_the_alert_mail_goes_to_reviewers_and_admins(people, backup_instance):
    people["bob"].email, people["admin"].email = "bob@example.test", "admin@example.test"
    people["bob"].save()
    people["admin"].save()
    sent = backup_notify_send(backup_instance.pk, "failed", "backup 3 failed: disk full")
    assert set(sent["email"]) >= {"bob@example.test", "admin@example.test"}
    assert "vault: backups failed" in mail.outbox[-1].subject and "disk full" in mail.outbox[-1].body
    assert backup_notify_send(backup_instance.pk, "ok", "") == {"email": []}


def test_retention_keeps_the_count_and_deletes_only_what_is_also_older_than_the_age(backup_instance):
    BackupPolicy.objects.create(instance=backup_instance, method="logical", retention_count=2, retention_days=1)
    now = timezone.now()
    rows = []
    for age_days in (0, 0.5, 2, 3):  # the two newest are kept by count; the older two are past the age
        key = f"vault-{backup_instance.pk}/logical/r{int(age_days * 10)}"
        storage().path(key).mkdir(parents=True, exist_ok=True)
        rows.append(Backup.objects.create(instance=backup_instance, method="logical", state="ok", key=key,
                                          started_at=now - timedelta(days=age_days), finished_at=now))
    deleted = backup_retention(backup_instance, now=now)
    assert sorted(deleted) == sorted([rows[2].pk, rows[3].pk])
    assert not storage().path(rows[3].key).exists() and storage().path(rows[0].key).exists()
    assert AuditEvent.objects.filter(action="backup.deleted", outcome="expired").count() == 2
    # nothing more goes on a second run
    assert backup_retention(backup_instance, now=now) == []


def test_the_sweep_marks_an_instance_without_a_recent_good_backup_late_once(backup_instance):
    policy = BackupPolicy.objects.create(instance=backup_instance, method="physical", interval_hours=1)
    BackupPolicy.objects.filter(pk=policy.pk).update(updated_at=timezone.now() - timedelta(hours=3))
    assert backup_sweep()["late"] == 1
    assert BackupPolicy.objects.get(pk=policy.pk).health == "late"
    backup_sweep()
    assert AuditEvent.objects.filter(action="backup.late", outcome="late").count() == 1
