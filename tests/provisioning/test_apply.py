"""Approved requests applied by a real Celery worker on a real cluster, exactly once."""

from __future__ import annotations

import psycopg
import pytest
from django.db import transaction
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import RequestStatus
from portal.errors import Gone, PolicyViolation
from portal.models import ChangeRequest, Execution, Grant, InstanceInventory, ManagedRole, ManagedSchema
from provisioning.models import OutboxMessage, RequestSecret
from provisioning.outbox import APPLY_TASK
from provisioning.secrets import secret_reveal
from tests.provisioning.helpers import (
    admin_conn,
    approved_request,
    grant_payload,
    markers,
    role_payload,
    schema_payload,
    unique,
)

pytestmark = pytest.mark.slow



def test_a_login_role_is_created_with_a_generated_password_revealed_once(
    transactional_db, people, api_for, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    # given an instance whose inventory was read (as submit does), and an approved login role request
    from provisioning.inventory import inventory_refresh

    inventory_refresh(managed_instance)
    name = unique("svc")
    request = approved_request(managed_instance, "role", role_payload(name, login=True), requester=people["alice"])
    # when the worker applies it
    request = wait_for_status(request.pk, {"applied", "failed"})
    # then it is applied once, with one marker on the target and one execution
    assert request.status == RequestStatus.APPLIED, request.status_detail
    assert markers(managed_cluster, request.pk, "postgres") == 1
    execution = Execution.objects.get(request=request)
    assert execution.outcome == "applied" and execution.finished_at and execution.worker
    assert [s["error"] for s in execution.statements] == ["", ""]  # the "role is new" assertion, CREATE ROLE
    assert "<generated at apply time>" in execution.statements[-1]["sql"]
    assert ManagedRole.objects.get(instance=managed_instance, name=name).login is True
    # and the inventory that submit-time checks read knows the new role (committed with "applied")
    assert InstanceInventory.objects.get(instance=managed_instance).roles()[name]["login"] is True
    assert OutboxMessage.objects.get(request=request).taken_at is not None
    # and the password is stored encrypted, not in plain text
    secret = RequestSecret.objects.get(request=request)
    # when others ask for it: a reviewer who sees the request is refused, dave does not see it
    assert api_for("bob").get(f"/api/v1/requests/{request.pk}/secret/").status_code == 403
    assert api_for("dave").get(f"/api/v1/requests/{request.pk}/secret/").status_code == 404
    with pytest.raises(PolicyViolation):
        secret_reveal(request=request, user=people["bob"])
    # and alice gets it once: it logs in over TCP with SCRAM
    response = api_for("alice").get(f"/api/v1/requests/{request.pk}/secret/")
    assert response.status_code == 200 and "no-store" in response["Cache-Control"].split(", ")
    password = response.json()["password"]
    assert len(password) >= 24 and password not in secret.encrypted
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name,
                         password=password, passfile="/dev/null") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name
    assert api_for("alice").get(f"/api/v1/requests/{request.pk}/secret/").status_code == 410
    with pytest.raises(Gone):
        secret_reveal(request=request, user=people["alice"])
    assert RequestSecret.objects.get(request=request).encrypted == ""
    # and the server stores a SCRAM verifier, and no audit event carries the password
    with admin_conn(managed_cluster, "postgres") as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,)).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$")
    events = AuditEvent.objects.filter(request_id=request.pk)
    assert {"request.queued", "request.running", "sql.executed", "request.applied", "secret.revealed"} <= set(
        events.values_list("action", flat=True))
    for event in events:
        assert password not in str(event.statement) + str(event.details)
        assert "SCRAM-SHA-256$" not in event.statement.replace("SCRAM-SHA-256$***", "")


def test_schema_then_grant_gives_exactly_the_granted_privileges(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    schema, reader = unique("ledger"), unique("reader")
    created = [
        approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
        approved_request(managed_instance, "role", role_payload(reader), requester=people["alice"]),
    ]
    for request in created:
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.entries (id int)").format(sql.Identifier(schema)))
    grant = approved_request(managed_instance, "grant", grant_payload(reader, schema, ["SELECT"]),
                             requester=people["alice"])
    grant = wait_for_status(grant.pk, {"applied", "failed"})
    assert grant.status == RequestStatus.APPLIED, grant.status_detail
    with admin_conn(managed_cluster) as conn:
        can = conn.execute(
            "SELECT has_schema_privilege(%(r)s, %(s)s, 'USAGE'), has_schema_privilege(%(r)s, %(s)s, 'CREATE'),"
            " has_table_privilege(%(r)s, %(t)s, 'SELECT'), has_table_privilege(%(r)s, %(t)s, 'INSERT')",
            {"r": reader, "s": schema, "t": f"{schema}.entries"}).fetchone()
    assert can == (True, False, True, False)
    assert ManagedSchema.objects.filter(instance=managed_instance, name=schema).exists()
    row = Grant.objects.get(request=grant)
    assert (row.role, row.schema, row.privileges, row.revoked_at) == (reader, schema, ["SELECT"], None)
    executed = AuditEvent.objects.filter(request_id=grant.pk, action="sql.executed").order_by("seq")
    assert list(executed.values_list("statement", flat=True)) == grant.plan


def test_a_definite_error_fails_at_once_with_the_statement_and_the_server_message(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    # given a grant to a role that does not exist on the cluster (the cluster changed since submit)
    schema = unique("orders")
    approved = approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"])
    assert wait_for_status(approved.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    request = approved_request(managed_instance, "grant", grant_payload(unique("ghost"), schema, ["USAGE"]),
                               requester=people["alice"])
    # when it runs, then it fails at once: one attempt, nothing changed, no marker
    request = wait_for_status(request.pk, {"applied", "failed"})
    assert request.status == RequestStatus.FAILED
    assert "does not exist" in request.status_detail and "SQLSTATE 42704" in request.status_detail
    assert request.plan[0] in request.status_detail
    execution = Execution.objects.get(request=request)
    assert execution.outcome == "failed" and execution.sqlstate == "42704"
    assert execution.statements[0]["error"]
    assert markers(managed_cluster, request.pk) == 0
    failed = AuditEvent.objects.get(request_id=request.pk, action="request.failed")
    assert failed.statement == request.plan[0] and failed.details["sqlstate"] == "42704"


def test_the_same_task_delivered_twice_changes_the_cluster_once(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    from portal.celery import app

    name = unique("twice")
    request = approved_request(managed_instance, "role", role_payload(name), requester=people["alice"],
                               enqueue=False)
    # when the task is queued and then delivered twice more (a re-send raced the first delivery)
    with transaction.atomic():
        from provisioning.outbox import enqueue_apply

        enqueue_apply(request)
    for _ in range(2):
        app.send_task(APPLY_TASK, kwargs={"request_id": request.pk, "plan_hash": request.plan_hash})
    request = wait_for_status(request.pk, {"applied", "failed"})
    assert request.status == RequestStatus.APPLIED, request.status_detail
    # then let every copy be processed: a final marker message goes after them in the queue
    probe = approved_request(managed_instance, "role", role_payload(unique("probe")), requester=people["alice"])
    wait_for_status(probe.pk, "applied")
    assert markers(managed_cluster, request.pk, "postgres") == 1
    assert Execution.objects.filter(request=request).count() == 1
    assert AuditEvent.objects.filter(request_id=request.pk, action="request.applied").count() == 1
    with admin_conn(managed_cluster, "postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)).fetchone()[0] == 1


def test_a_plan_that_no_longer_renders_the_same_fails_as_stale(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    # given an approved request whose stored plan differs from what its payload renders
    request = approved_request(managed_instance, "role", role_payload(unique("stale")), requester=people["alice"],
                               enqueue=False)
    ChangeRequest.objects.filter(pk=request.pk).update(payload=role_payload(unique("other")))
    request.refresh_from_db()
    with transaction.atomic():
        from provisioning.outbox import enqueue_apply

        enqueue_apply(request)
    request = wait_for_status(request.pk, {"applied", "failed"})
    assert request.status == RequestStatus.FAILED
    assert "stale plan" in request.status_detail
    assert markers(managed_cluster, request.pk, "postgres") == 0


def test_unrevealed_secrets_are_wiped_after_a_day(db, people, managed_instance):
    from datetime import timedelta

    from django.utils import timezone

    from portal.crypto import encrypt
    from provisioning.secrets import secret_wipe_expired

    # given two generated passwords, one created 25 hours ago, one just now
    old, new = (approved_request(managed_instance, "role", role_payload(unique("w"), login=True),
                                 requester=people["alice"], enqueue=False) for _ in range(2))
    ChangeRequest.objects.filter(pk__in=[old.pk, new.pk]).update(status=RequestStatus.APPLIED)
    for request in (old, new):
        RequestSecret.objects.create(request=request, role=request.payload["name"], encrypted=encrypt("pw" * 16))
    RequestSecret.objects.filter(request=old).update(created_at=timezone.now() - timedelta(hours=25))
    # when the beat job runs
    assert secret_wipe_expired() == 1
    # then the old one is gone for good (410), the new one still reveals
    old.refresh_from_db()
    new.refresh_from_db()
    with pytest.raises(Gone):
        secret_reveal(request=old, user=people["alice"])
    assert secret_reveal(request=new, user=people["alice"]) == "pw" * 16
    assert AuditEvent.objects.filter(request_id=old.pk, action="secret.wiped").count() == 1


def test_a_portal_restored_under_another_database_name_still_finds_its_markers(
    transactional_db, people, managed_cluster, managed_instance, monkeypatch
):
    from django.db import connection

    from provisioning import engine
    from provisioning import markers as target_markers

    # given a login-less role applied once: its marker is on the cluster
    request = approved_request(managed_instance, "role", role_payload(unique("restored")), requester=people["alice"])
    assert engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="before-restore") == "applied"
    # when the portal database comes back from a backup taken before that commit was recorded
    # (the request still queued), restored under another name as docs/operations.md does it,
    # and a fresh process picks the request up
    monkeypatch.setitem(connection.settings_dict, "NAME", "portal_restored")
    target_markers.portal_id.cache_clear()
    try:
        ChangeRequest.objects.filter(pk=request.pk).update(status=RequestStatus.QUEUED)
        outcome = engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="after-restore")
    finally:
        target_markers.portal_id.cache_clear()
    # then it finds its own marker and runs nothing again
    assert outcome == "already_applied"
    assert markers(managed_cluster, request.pk, "postgres") == 1
    request.refresh_from_db()
    assert request.status == RequestStatus.APPLIED


def test_the_identity_migration_keeps_an_upgraded_portals_derived_id_and_draws_a_new_portal_one(
    db, people, managed_instance
):
    import importlib

    from django.apps import apps
    from django.db import connection

    from provisioning.models import PortalIdentity

    migration = importlib.import_module("provisioning.migrations.0003_portal_identity")

    def seeded() -> str:
        PortalIdentity.objects.all().delete()
        with connection.schema_editor() as editor:
            migration.seed_identity(apps, editor)
        return PortalIdentity.objects.get().value

    # given a new portal (no request yet): a random id each time, never one derived from the
    # connection, which another machine's portal may share
    assert not ChangeRequest.objects.exists()
    first, second = seeded(), seeded()
    assert first != second and len(first) == 16 and migration.legacy_portal_id(connection) not in (first, second)
    # given a portal upgraded with requests: the id it derived before, so its markers still match
    approved_request(managed_instance, "role", role_payload(unique("legacy")), enqueue=False)
    assert seeded() == migration.legacy_portal_id(connection)
