"""Backups and restore drills on a real local cluster (issue #20): back up, write more, restore to a
time between and find exactly the rows committed before it; a corrupted backup file is caught."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from audit.models import AuditEvent
from portal.models import Backup, BackupPolicy, RestoreDrill
from portal.services.backups import backup_policy_set, backup_run, drill_request, drill_run
from provisioning.backups import physical
from provisioning.backups.storage import storage

pytestmark = pytest.mark.django_db


def _sql(cluster, statement: str, params=None):
    with psycopg.connect(cluster.socket_conninfo("app"), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def _wait_archived(cluster, instance, segment: str, timeout: float = 30) -> None:
    folder = physical.archive_folder(instance)
    deadline = time.monotonic() + timeout
    while not (folder / segment).exists():
        assert time.monotonic() < deadline, f"{segment} never reached the archive"
        time.sleep(0.1)


def test_point_in_time_drill_finds_exactly_the_rows_committed_before_the_target(people, backup_instance,
                                                                                 backup_cluster):
    # given a policy and a table with one row, backed up
    admin = people["admin"]
    _sql(backup_cluster, "DROP TABLE IF EXISTS ledger")
    _sql(backup_cluster, "CREATE TABLE ledger (id serial PRIMARY KEY, tag text NOT NULL)")
    _sql(backup_cluster, "INSERT INTO ledger (tag) VALUES ('base')")
    backup_policy_set(instance=backup_instance, actor=admin, enabled=True, method="physical", check_queries=[
        {"name": "before-only", "database": "app",
         "sql": "SELECT count(*) = 4 AND count(*) FILTER (WHERE tag = 'after') = 0 FROM ledger"}])
    assert backup_run(backup_instance.pk) == "ok"
    backup = Backup.objects.get(instance=backup_instance)
    assert backup.state == "ok" and backup.verified and len(backup.checksum) == 64
    assert backup.wal_start and backup.wal_end and backup.size_bytes > 1_000_000
    assert backup.row_counts["app"]["public.ledger"] == 1
    assert (storage().path(backup.key) / "backup_manifest").is_file()
    assert BackupPolicy.objects.get(instance=backup_instance).archiving
    assert AuditEvent.objects.filter(action="backup.taken", object_id=str(backup.pk), outcome="ok").exists()

    # when three rows are committed before the target time and two after it
    time.sleep(0.2)
    _sql(backup_cluster, "INSERT INTO ledger (tag) SELECT 'before' FROM generate_series(1, 3)")
    time.sleep(0.3)
    target = timezone.now()
    time.sleep(0.3)
    _sql(backup_cluster, "INSERT INTO ledger (tag) SELECT 'after' FROM generate_series(1, 2)")
    _wait_archived(backup_cluster, backup_instance, physical.switch_wal(backup_instance))

    # then a drill to the target time restores exactly the rows committed before it
    drill = drill_request(instance=backup_instance, actor=admin, target_time=target)
    assert drill_run(drill.pk) == "passed"
    drill.refresh_from_db()
    checks = {c["name"]: c for c in drill.checks}
    assert drill.state == "passed", drill.checks
    assert checks["manifest"]["ok"] and checks["tables_readable"]["ok"] and checks["check:before-only"]["ok"]
    assert drill.restored_to is not None and drill.restored_to <= target
    assert drill.rto_seconds > 0 and 0 <= drill.rpo_seconds < 2
    assert AuditEvent.objects.filter(action="backup.drill_passed", object_id=str(drill.pk), outcome="ok").exists()

    # and the same check fails on a drill to the latest state (the 'after' rows are there): it can fail
    latest = drill_request(instance=backup_instance, actor=admin)
    assert drill_run(latest.pk) == "failed"
    latest.refresh_from_db()
    assert {c["name"]: c["ok"] for c in latest.checks}["check:before-only"] is False
    assert AuditEvent.objects.filter(action="backup.drill_failed", object_id=str(latest.pk),
                                     outcome="failed").exists()
    assert BackupPolicy.objects.get(instance=backup_instance).health == "failed"
    # the scratch clusters are gone
    assert not any((Path(drill.instance.data_dir).parent.parent / "drills").glob("*/data"))


def test_a_corrupted_backup_file_fails_the_drill_at_the_manifest(people, backup_instance, backup_cluster):
    admin = people["admin"]
    _sql(backup_cluster, "CREATE TABLE IF NOT EXISTS ledger (id serial PRIMARY KEY, tag text NOT NULL)")
    backup_policy_set(instance=backup_instance, actor=admin, enabled=True, method="physical")
    assert backup_run(backup_instance.pk) == "ok"
    backup = Backup.objects.get(instance=backup_instance, state="ok")
    # one byte of one data file flipped
    victim = next(p for p in sorted((storage().path(backup.key) / "base").rglob("*")) if p.is_file()
                  and p.stat().st_size > 8192)
    data = bytearray(victim.read_bytes())
    data[4096] ^= 0xFF
    victim.write_bytes(bytes(data))

    drill = drill_request(instance=backup_instance, actor=admin)
    assert drill_run(drill.pk) == "failed"
    drill.refresh_from_db()
    assert drill.checks[0]["name"] == "manifest" and not drill.checks[0]["ok"]
    assert "checksum mismatch" in drill.checks[0]["detail"]
    assert [c["name"] for c in drill.checks] == ["manifest"]  # nothing restored from a bad backup
    event = AuditEvent.objects.get(action="backup.drill_failed", object_id=str(drill.pk))
    assert event.outcome == "failed" and "manifest" in event.details["reason"]
    assert RestoreDrill.objects.get(pk=drill.pk).rto_seconds is None


def test_check_queries_run_as_a_read_only_non_superuser(people, backup_instance, backup_cluster):
    admin = people["admin"]
    backup_policy_set(instance=backup_instance, actor=admin, enabled=True, method="physical", check_queries=[
        {"name": "not-superuser", "database": "app",
         "sql": "SELECT NOT rolsuper FROM pg_roles WHERE rolname = session_user"},
        {"name": "no-files", "database": "app", "sql": "SELECT length(pg_read_file('PG_VERSION')) > 0"},
        {"name": "no-role-escape", "database": "app",
         "sql": "SELECT set_config('role', 'postgres', true) IS NOT NULL AND length(pg_read_file('PG_VERSION')) > 0"},
        {"name": "no-writes", "database": "app", "sql": "CREATE TABLE intruder (id int)"},
        {"name": "one-statement", "database": "app", "sql": "SELECT 1; SELECT 2"},
    ])
    assert backup_run(backup_instance.pk) == "ok"
    drill = drill_request(instance=backup_instance, actor=admin)
    drill_run(drill.pk)
    drill.refresh_from_db()
    checks = {c["name"]: c for c in drill.checks}
    assert checks["manifest"]["ok"] and checks["restore"]["ok"] and checks["tables_readable"]["ok"]
    assert checks["check:not-superuser"]["ok"]
    assert not checks["check:no-files"]["ok"] and "permission denied" in checks["check:no-files"]["detail"]
    assert not checks["check:no-role-escape"]["ok"]
    assert not checks["check:no-writes"]["ok"] and "read-only" in checks["check:no-writes"]["detail"]
    assert not checks["check:one-statement"]["ok"]
