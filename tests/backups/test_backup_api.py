"""The backup API and page (issue #20): who may do what, every bad value a 4xx naming its field,
query counts pinned; and a logical backup of an `external` instance restored by a drill."""

from __future__ import annotations

import psycopg
import pytest
from django.utils import timezone

from audit.models import AuditEvent
from portal.choices import InstanceKind
from portal.models import Backup, BackupPolicy, Instance, RestoreDrill
from portal.services.backups import backup_run, drill_request, drill_run
from provisioning.backups.storage import storage

pytestmark = pytest.mark.django_db

POLICY = "/api/v1/instances/{}/backup-policy/"


def test_admin_sets_a_policy_and_it_is_audited(api_for, backup_instance):
    answer = api_for("admin").put(POLICY.format(backup_instance.pk), {
        "enabled": True, "method": "physical", "interval_hours": 6, "retention_count": 3, "retention_days": 2,
        "drill_interval_hours": 24, "check_queries": [{"name": "users", "database": "app",
                                                       "sql": "SELECT count(*) > 0 FROM users"}]}, format="json")
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["saved"] and body["interval_hours"] == 6 and body["check_queries"][0]["name"] == "users"
    event = AuditEvent.objects.get(action="backup.policy_changed")
    assert event.outcome == "ok" and event.details["before"] is None and event.details["after"]["retention_count"] == 3
    # a reviewer reads it; a developer may neither read nor change it
    assert api_for("bob").get(POLICY.format(backup_instance.pk)).json()["method"] == "physical"
    assert api_for("alice").get(POLICY.format(backup_instance.pk)).status_code == 403
    refused = api_for("alice").put(POLICY.format(backup_instance.pk), {"enabled": False}, format="json")
    assert refused.status_code == 403
    assert BackupPolicy.objects.get(instance=backup_instance).enabled is True
    assert AuditEvent.objects.filter(action="backup.policy_changed").count() == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"method": "tape"}, "method"),
    ({"interval_hours": 0}, "interval_hours"),
    ({"retention_count": 0}, "retention_count"),
    ({"retention_days": "soon"}, "retention_days"),
    ({"drill_interval_hours": -1}, "drill_interval_hours"),
    ({"check_queries": [{"name": "Bad Name", "database": "app", "sql": "SELECT 1"}]}, "check_queries.0.name"),
    ({"check_queries": [{"name": "ok", "database": "app", "sql": "   "}]}, "check_queries"),
    ({"check_queries": "SELECT 1"}, "check_queries"),
])
def test_a_bad_policy_value_is_a_400_naming_the_field_and_changes_nothing(api_for, backup_instance, body, field):
    answer = api_for("admin").put(POLICY.format(backup_instance.pk), body, format="json")
    assert answer.status_code == 400, answer.json()
    errors = answer.json()["errors"]
    assert any(key == field or key.startswith(field) for key in errors), errors
    assert not BackupPolicy.objects.filter(instance=backup_instance).exists()
    assert not AuditEvent.objects.filter(action="backup.policy_changed").exists()


def test_physical_backups_are_refused_for_an_external_instance(api_for, backup_instance):
    backup_instance.kind = InstanceKind.EXTERNAL
    backup_instance.save()
    answer = api_for("admin").put(POLICY.format(backup_instance.pk), {"method": "physical"}, format="json")
    assert answer.status_code == 400 and "method" in answer.json()["errors"]
    assert api_for("admin").get(POLICY.format(backup_instance.pk)).json()["method"] == "logical"


def test_the_catalog_and_drill_lists_are_pinned_in_queries(api_for, backup_instance, django_assert_max_num_queries):
    now = timezone.now()
    for n in range(20):
        backup = Backup.objects.create(instance=backup_instance, method="physical", state="ok", started_at=now,
                                       finished_at=now, key=f"vault-{backup_instance.pk}/base/{n}", size_bytes=n)
        RestoreDrill.objects.create(instance=backup_instance, backup=backup, started_at=now, state="passed",
                                    rto_seconds=1.5, rpo_seconds=0.5, checks=[{"name": "manifest", "ok": True}])
    client = api_for("carol")
    with django_assert_max_num_queries(6):
        backups = client.get(f"/api/v1/instances/{backup_instance.pk}/backups/")
    with django_assert_max_num_queries(6):
        drills = client.get(f"/api/v1/instances/{backup_instance.pk}/drills/")
    assert backups.status_code == 200 and backups.json()["count"] == 20
    assert drills.status_code == 200 and drills.json()["results"][0]["rto_seconds"] == 1.5


def test_the_page_shows_failed_backups_in_red_and_the_drill_chart(web_for, backup_instance):
    BackupPolicy.objects.create(instance=backup_instance, method="physical", health="failed",
                                health_detail="backup 7 failed: pg_basebackup failed")
    RestoreDrill.objects.create(instance=backup_instance, started_at=timezone.now(), state="passed",
                                rto_seconds=2.0, rpo_seconds=1.0)
    page = web_for("admin").get(f"/instances/{backup_instance.pk}/backups/").content.decode()
    assert "text-bg-danger" in page and "backup 7 failed" in page
    assert 'id="drill-series"' in page and "chart.umd.js" in page and 'id="policy-form"' in page
    auditor_page = web_for("carol").get(f"/instances/{backup_instance.pk}/backups/").content.decode()
    assert 'id="policy-form"' not in auditor_page and 'id="backup-now"' not in auditor_page


def test_healthz_names_an_instance_whose_backups_are_late(client, backup_instance):
    BackupPolicy.objects.create(instance=backup_instance, method="physical", health="late")
    body = client.get("/healthz").json()
    assert body["backups"] == [{"instance": "vault", "health": "late"}]
    assert body["status"] == "ok"


def test_a_logical_backup_of_an_external_instance_is_restored_by_a_drill(people, backup_instance, backup_cluster):
    # given the cluster registered as an external instance: reached over TCP with its password
    with psycopg.connect(backup_cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS parcels")
        conn.execute("CREATE TABLE parcels (id int PRIMARY KEY, weight numeric)")
        conn.execute("INSERT INTO parcels SELECT g, g * 1.5 FROM generate_series(1, 250) g")
    backup_instance.kind = InstanceKind.EXTERNAL
    backup_instance.save()
    BackupPolicy.objects.create(instance=backup_instance, method="logical", check_queries=[
        {"name": "parcels", "database": "app", "sql": "SELECT count(*) = 250 FROM parcels"}])
    # when it is backed up and drilled
    assert backup_run(backup_instance.pk) == "ok"
    backup = Backup.objects.get(instance=backup_instance)
    assert backup.method == "logical" and backup.verified and "app" in backup.databases
    assert backup.row_counts["app"]["public.parcels"] == 250
    drill = drill_request(instance=backup_instance, actor=people["admin"])
    result = drill_run(drill.pk)
    drill.refresh_from_db()
    # then every check passes, the globals came without passwords
    assert result == "passed", drill.checks
    assert {c["name"] for c in drill.checks} >= {"manifest", "restore", "tables_readable", "row_counts",
                                                 "check:parcels"}
    globals_sql = (storage().path(backup.key) / "globals.sql").read_text()
    assert "CREATE ROLE postgres" in globals_sql and "SCRAM-SHA-256$" not in globals_sql


def test_a_replica_gets_no_policy_of_its_own(api_for, backup_instance):
    replica = Instance.objects.create(name="vault_ro", kind=InstanceKind.LOCAL, host="127.0.0.1", port=1,
                                      admin_user="postgres", replica_of=backup_instance)
    answer = api_for("admin").put(POLICY.format(replica.pk), {"enabled": True}, format="json")
    assert answer.status_code == 400 and "instance" in answer.json()["errors"]
    assert not BackupPolicy.objects.filter(instance=replica).exists()


def test_the_backups_page_is_pinned_in_queries(web_for, backup_instance, django_assert_max_num_queries):
    now = timezone.now()
    BackupPolicy.objects.create(instance=backup_instance, method="physical")
    for n in range(30):
        backup = Backup.objects.create(instance=backup_instance, method="physical", state="ok", started_at=now,
                                       finished_at=now, key=f"vault-{backup_instance.pk}/base/{n}")
        RestoreDrill.objects.create(instance=backup_instance, backup=backup, started_at=now, state="passed",
                                    rto_seconds=1.0, rpo_seconds=0.1)
    client = web_for("admin")
    with django_assert_max_num_queries(13):
        page = client.get(f"/instances/{backup_instance.pk}/backups/")
    assert page.status_code == 200 and page.content.decode().count("<tr") >= 60


def test_the_policy_form_saves_for_an_admin_and_names_a_bad_field(web_for, backup_instance):
    client = web_for("admin")
    url = f"/instances/{backup_instance.pk}/backups/"
    form = {"action": "policy", "enabled": "on", "method": "physical", "interval_hours": "12", "retention_count": "5",
            "retention_days": "7", "drill_interval_hours": "48",
            "check_queries": '[{"name": "rows", "database": "app", "sql": "SELECT true"}]'}
    assert client.post(url, form).status_code == 302
    policy = BackupPolicy.objects.get(instance=backup_instance)
    assert policy.enabled and policy.retention_count == 5 and policy.check_queries[0]["name"] == "rows"
    page = client.post(url, {**form, "check_queries": "[{]"}, follow=True).content.decode()
    assert "check_queries" in page and "not JSON" in page
    assert AuditEvent.objects.filter(action="backup.policy_changed").count() == 1
