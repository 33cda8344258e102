"""Point-in-time restore as a reviewed request (issue #20): alice asks for database `app` of `vault`
as it was at T in a new instance, bob approves, the engine builds it; exactly the rows committed
before T are there, the other databases are not."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from audit.models import AuditEvent
from portal.choices import InstanceKind
from portal.models import ChangeRequest, Instance
from portal.services.backups import backup_policy_set, backup_run
from provisioning import engine
from provisioning.backups import physical
from provisioning.clusters import LocalCluster

pytestmark = pytest.mark.django_db


def _sql(cluster, statement: str, database: str = "app"):
    with psycopg.connect(cluster.socket_conninfo(database), autocommit=True) as conn:
        conn.execute(statement)


def _body(**payload) -> dict:
    return {"type": "restore", "instance": "vault", "team": "payments", "justification": "undo yesterday's bad import",
            "payload": {"database": "app", "target_time": timezone.now().isoformat(), "name": "vault_asof",
                        **payload}}


@pytest.mark.parametrize(("payload", "field"), [
    ({"target_time": "yesterday"}, "payload.target_time"),
    ({"target_time": "2026-01-01T00:00:00"}, "payload.target_time"),
    ({"target_time": (timezone.now() + timedelta(hours=1)).isoformat()}, "payload.target_time"),
    ({"name": "Vault As Of"}, "payload.name"),
    ({"name": "vault"}, "payload.name"),
    ({"database": ""}, "payload.database"),
    ({"extra": 1}, "payload.extra"),
])
def test_a_bad_restore_payload_is_a_400_naming_the_field(api_for, backup_instance, payload, field):
    answer = api_for("alice").post("/api/v1/requests/", _body(**payload), format="json")
    assert answer.status_code == 400, answer.json()
    assert field in answer.json()["errors"]
    assert not ChangeRequest.objects.filter(type="restore").exists()


def test_a_restore_of_an_external_instance_is_refused(api_for, backup_instance):
    Instance.objects.filter(pk=backup_instance.pk).update(kind=InstanceKind.EXTERNAL)
    answer = api_for("alice").post("/api/v1/requests/", _body(), format="json")
    assert answer.status_code == 400 and "instance" in answer.json()["errors"]


def test_a_reviewed_restore_request_builds_the_database_as_it_was(api_for, people, backup_instance, backup_cluster):
    # given a backup, then rows committed before and after the target time, in the archive
    _sql(backup_cluster, "DROP TABLE IF EXISTS orders")
    _sql(backup_cluster, "CREATE TABLE orders (id serial PRIMARY KEY, tag text)")
    _sql(backup_cluster, "INSERT INTO orders (tag) VALUES ('base')")
    with psycopg.connect(backup_cluster.socket_conninfo(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS scratchpad")
        conn.execute("CREATE DATABASE scratchpad")
    backup_policy_set(instance=backup_instance, actor=people["admin"], enabled=False, method="physical")
    assert backup_run(backup_instance.pk) == "ok"
    time.sleep(0.2)
    _sql(backup_cluster, "INSERT INTO orders (tag) VALUES ('before'), ('before')")
    time.sleep(0.3)
    target = timezone.now()
    time.sleep(0.3)
    _sql(backup_cluster, "INSERT INTO orders (tag) VALUES ('after')")
    segment = physical.switch_wal(backup_instance)
    deadline = time.monotonic() + 30
    while not (physical.archive_folder(backup_instance) / segment).exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # when alice files the restore, it is rated high, and bob and the admin approve it
    answer = api_for("alice").post("/api/v1/requests/", _body(target_time=target.isoformat()), format="json")
    assert answer.status_code == 201, answer.json()
    created = answer.json()
    assert created["risk"] == "high" and any("recovery_target_time" in line for line in created["plan"])
    assert AuditEvent.objects.filter(action="request.submitted", request_id=created["id"]).exists()
    for reviewer in ("bob", "admin"):
        request = ChangeRequest.objects.get(pk=created["id"])
        if request.status == "submitted":
            decided = api_for(reviewer).post(f"/api/v1/requests/{created['id']}/approve/", {"comment": "ok"},
                                             format="json")
            assert decided.status_code == 200, decided.json()
    request = ChangeRequest.objects.get(pk=created["id"])
    assert request.status in ("approved", "queued"), request.status
    ChangeRequest.objects.filter(pk=request.pk).update(status="queued")
    restored = None
    try:
        outcome = engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="test")
        request.refresh_from_db()
        assert outcome == "applied" and request.status == "applied", (request.status_detail,
                                                                      list(request.executions.values("error")))
        restored = Instance.objects.get(name="vault_asof")

        # then the new instance holds exactly the rows committed before the target, and only `app`
        with psycopg.connect(host="127.0.0.1", port=restored.port, user=restored.admin_user,
                             password=restored.admin_password, dbname="app") as conn:
            tags = sorted(row[0] for row in conn.execute("SELECT tag FROM orders"))
            databases = {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
        assert tags == ["base", "before", "before"]
        assert "scratchpad" not in databases and "app" in databases
        event = AuditEvent.objects.get(action="backup.restored", request_id=request.pk)
        assert event.outcome == "ok" and event.details["source"] == "vault"
        assert restored.kind == "local" and restored.environment == backup_instance.environment
        # a second apply of the same request changes nothing
        ChangeRequest.objects.filter(pk=request.pk).update(status="queued")
        assert engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="test") == "applied"
        assert Instance.objects.filter(name="vault_asof").count() == 1
    finally:
        if restored is not None:
            LocalCluster(data_dir=Path(restored.data_dir), port=restored.port).remove()


def test_the_new_request_page_offers_a_point_in_time_restore(web_for, backup_instance):
    picker = web_for("alice").get("/requests/new/").content.decode()
    assert "Point-in-time restore" in picker
    page = web_for("alice").get(f"/requests/new/restore/?instance={backup_instance.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="target_time"' in html and 'name="database"' in html and 'name="name"' in html
