"""Requests approved together are applied together: the worker that takes one claims the others
queued for the same database and runs their plans in one target transaction, each plan still
all-or-nothing with its own marker, outcome, execution and audit trail."""

from __future__ import annotations

import psycopg
import pytest
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from audit.verify import verify_chain
from portal.choices import RequestStatus
from portal.models import ChangeRequest, Execution, Grant, ManagedRole
from provisioning import engine
from provisioning.engine import Outcome, pool
from provisioning.models import OutboxMessage
from provisioning.outbox import enqueue_apply
from tests.provisioning.helpers import admin_conn, approved_request, grant_payload, markers, role_payload, unique

pytestmark = pytest.mark.slow


def _queued_together(instance, items: list[tuple[str, dict]], requester) -> list[ChangeRequest]:
    """Approved requests queued in one transaction (as a burst of approvals leaves them)."""
    requests = [approved_request(instance, type_, payload, requester=requester, enqueue=False)
                for type_, payload in items]
    with transaction.atomic():
        for request in requests:
            enqueue_apply(request)
    return requests


def _apply(request: ChangeRequest) -> str:
    # The task body, run here as the worker that received this request's message would.
    return engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="batch-test")


def _schema_with_table(cluster, schema: str) -> str:
    """A schema owned by `<schema>_owner` holding table t, made by hand in database app."""
    with admin_conn(cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(schema + "_owner")))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema),
                                                                          sql.Identifier(schema + "_owner")))
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
    return schema


@pytest.fixture
def schema_with_tables(managed_cluster):
    return _schema_with_table(managed_cluster, unique("bs"))


def _create_roles(cluster, names: list[str]) -> None:
    with admin_conn(cluster, "postgres") as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))


def test_a_burst_of_grants_is_applied_in_one_batch_and_a_failing_plan_fails_alone(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables
):
    # given five grants to existing roles and one to a role that does not exist, queued together
    schema = schema_with_tables
    roles = [unique("br") for _ in range(5)]
    _create_roles(managed_cluster, roles)
    missing = unique("nobody")
    items = [("grant", grant_payload(role, schema, ["SELECT"])) for role in roles[:3]]
    items.append(("grant", grant_payload(missing, schema, ["SELECT"])))
    items += [("grant", grant_payload(role, schema, ["SELECT"])) for role in roles[3:]]
    requests = _queued_together(managed_instance, items, people["alice"])
    # when the first one's task runs
    assert _apply(requests[0]) == "applied"
    # then all six were claimed by that one attempt
    running = AuditEvent.objects.filter(action="request.running", request_id__in=[r.pk for r in requests])
    assert sorted(e.request_id for e in running) == sorted(r.pk for r in requests)
    assert {e.details["batch"] for e in running} == {6}
    assert OutboxMessage.objects.filter(request__in=requests, taken_at__isnull=True).count() == 0
    # and the five good plans are applied once each, with their marker and their privilege
    good = [r for r in requests if r.payload["role"] != missing]
    bad = next(r for r in requests if r.payload["role"] == missing)
    for request in good:
        request.refresh_from_db()
        assert request.status == RequestStatus.APPLIED, request.status_detail
        assert markers(managed_cluster, request.pk) == 1
        assert Execution.objects.get(request=request).outcome == "applied"
        assert AuditEvent.objects.filter(request_id=request.pk, action="sql.executed").count() == len(request.plan)
        assert AuditEvent.objects.get(request_id=request.pk, action="request.applied").approvers == []
    with admin_conn(managed_cluster) as conn:
        for role in roles:
            assert conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')",
                                (role, f"{schema}.t")).fetchone()[0]
    assert Grant.objects.filter(request__in=good).count() == 5
    # and the bad one failed alone, with the statement and the server's message, and left nothing
    bad.refresh_from_db()
    assert bad.status == RequestStatus.FAILED
    assert "does not exist" in bad.status_detail and "while running: GRANT" in bad.status_detail
    assert markers(managed_cluster, bad.pk) == 0
    assert not Grant.objects.filter(request=bad).exists()
    failed = AuditEvent.objects.get(request_id=bad.pk, action="request.failed")
    assert failed.details["sqlstate"] == "42704"
    # the good plans' logs hold only their final run (the first, straight-through try was rolled back)
    for request in good:
        statements = Execution.objects.get(request=request).statements
        assert [row["error"] for row in statements] == [""] * len(request.plan)
    # and the chain of all those events verifies
    assert verify_chain().ok
    # when the other requests' messages arrive afterwards, they change nothing
    for request in requests[1:]:
        assert _apply(request) == "skipped"
    assert Execution.objects.filter(request__in=requests).count() == 6


def test_roles_and_grants_for_different_databases_are_not_mixed(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables
):
    # given a role request (cluster-wide, run on the instance's database) and grants (database app)
    role_name = unique("mixrole")
    grantee = unique("mixg")
    _create_roles(managed_cluster, [grantee])
    requests = _queued_together(managed_instance, [
        ("grant", grant_payload(grantee, schema_with_tables, ["SELECT"])),
        ("role", role_payload(role_name)),
    ], people["alice"])
    # when the grant's task runs, only the grant is applied; the role keeps waiting for its own
    assert _apply(requests[0]) == "applied"
    assert ChangeRequest.objects.get(pk=requests[1].pk).status == RequestStatus.QUEUED
    assert _apply(requests[1]) == "applied"
    assert markers(managed_cluster, requests[1].pk, "postgres") == 1
    assert ManagedRole.objects.filter(instance=managed_instance, name=role_name).exists()


def test_a_companion_hitting_a_lock_timeout_is_queued_again_with_its_own_message(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables, monkeypatch
):
    # the target sessions' lock_timeout, 5 s in production, is 0.5 s here: waiting it out is the point,
    # its length is not (this instance is new, so no cached target connection has the old value)
    monkeypatch.setattr(pool, "LOCK_TIMEOUT_MS", 500)
    # given two grants queued together, and the test holding the table's catalog row that the
    # second one must change (an open transaction changing its ACL)
    schema = schema_with_tables
    other = _schema_with_table(managed_cluster, unique("blockedschema"))
    free, blocked, holder = unique("free"), unique("blocked"), unique("holder")
    _create_roles(managed_cluster, [free, blocked, holder])
    requests = _queued_together(managed_instance, [
        ("grant", grant_payload(free, schema, ["SELECT"])),
        ("grant", grant_payload(blocked, other, ["SELECT"])),
    ], people["alice"])
    blocker = psycopg.connect(managed_cluster.socket_conninfo("app"))
    try:
        blocker.execute(sql.SQL("GRANT SELECT ON {}.t TO {}").format(sql.Identifier(other), sql.Identifier(holder)))
        # when the first one's task runs (the second's plan waits out the lock timeout)
        started = timezone.now()
        assert _apply(requests[0]) == "applied"
    finally:
        blocker.rollback()
        blocker.close()
    # then the free one is applied and the blocked one is queued again, to be retried
    blocked_request = ChangeRequest.objects.get(pk=requests[1].pk)
    assert blocked_request.status == RequestStatus.QUEUED
    assert blocked_request.status_detail.startswith("retrying after a transient error: ")
    assert "lock timeout" in blocked_request.status_detail
    assert markers(managed_cluster, requests[0].pk) == 1 and markers(managed_cluster, requests[1].pk) == 0
    # by a new outbox message of its own, published with a backoff (the sweeper leaves it alone until due)
    retry = OutboxMessage.objects.get(request=blocked_request, taken_at__isnull=True)
    assert retry.send_count == 1 and retry.sent_at >= started
    assert Execution.objects.get(request=blocked_request).outcome == "retrying"
    # when that message is delivered, the grant is applied once
    assert _apply(blocked_request) == "applied"
    assert markers(managed_cluster, requests[1].pk) == 1
    assert list(Execution.objects.filter(request=blocked_request).order_by("attempt")
                .values_list("outcome", flat=True)) == ["retrying", "applied"]


def test_a_batch_of_twenty_costs_a_bounded_number_of_portal_queries(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables, django_assert_max_num_queries
):
    roles = [unique("qr") for _ in range(20)]
    _create_roles(managed_cluster, roles)
    requests = _queued_together(managed_instance, [("grant", grant_payload(role, schema_with_tables, ["SELECT"]))
                                                   for role in roles], people["alice"])
    # claim, record and audit in a few statements for the whole batch, not a few per request
    with django_assert_max_num_queries(30):
        assert _apply(requests[0]) == "applied"
    assert ChangeRequest.objects.filter(pk__in=[r.pk for r in requests], status=RequestStatus.APPLIED).count() == 20


def test_with_batches_off_each_request_is_applied_alone(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables, settings
):
    settings.PROVISIONING_BATCH_MAX = 1
    roles = [unique("solo") for _ in range(2)]
    _create_roles(managed_cluster, roles)
    requests = _queued_together(managed_instance, [("grant", grant_payload(role, schema_with_tables, ["SELECT"]))
                                                   for role in roles], people["alice"])
    assert _apply(requests[0]) == "applied"
    assert ChangeRequest.objects.get(pk=requests[1].pk).status == RequestStatus.QUEUED


def _published(broker_url: str) -> list[dict]:
    """The apply messages waiting in a broker's default queue: their kwargs, oldest first."""
    import base64
    import json

    import redis

    client = redis.Redis(unix_socket_path=broker_url.removeprefix("redis+socket://"))
    found = []
    for raw in reversed(client.lrange("celery", 0, -1)):  # LPUSH: the oldest is last
        message = json.loads(raw)
        if message["headers"]["task"] == "provisioning.apply_request":
            found.append(json.loads(base64.b64decode(message["body"]))[1])
    return found


def test_approvals_committed_together_go_out_as_one_message_per_database(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables, tmp_path
):
    from tests.fixtures.celery import RedisServer, publishing_to

    broker = RedisServer(tmp_path / "broker").start()
    try:
        with publishing_to(broker.url):
            # given three grants (database app) and two roles (the instance's database) approved together
            grantees = [unique("mg") for _ in range(3)]
            _create_roles(managed_cluster, grantees)
            requests = _queued_together(
                managed_instance,
                [("grant", grant_payload(role, schema_with_tables, ["SELECT"])) for role in grantees]
                + [("role", role_payload(unique("mr"))) for _ in range(2)],
                people["alice"])
            messages = _published(broker.url)
    finally:
        broker.stop()
    # then one message per database, led by its first request and naming the others
    grants, roles = requests[:3], requests[3:]
    assert messages == [
        {"request_id": grants[0].pk, "plan_hash": grants[0].plan_hash, "companions": [r.pk for r in grants[1:]]},
        {"request_id": roles[0].pk, "plan_hash": roles[0].plan_hash, "companions": [roles[1].pk]},
    ]
    # and every row counts as sent (the sweeper re-sends only what stays untaken)
    assert set(OutboxMessage.objects.filter(request__in=requests).values_list("send_count", flat=True)) == {1}
    # when that message's request was cancelled before delivery, its companions are still applied by it
    ChangeRequest.objects.filter(pk=grants[0].pk).update(status=RequestStatus.CANCELLED)
    outcome = engine.apply(worker="batch-test", **messages[0])
    # (the outcome of the batch its first queued companion led)
    assert outcome == Outcome.APPLIED
    for request in grants[1:]:
        assert ChangeRequest.objects.get(pk=request.pk).status == RequestStatus.APPLIED
        assert markers(managed_cluster, request.pk) == 1
    assert markers(managed_cluster, grants[0].pk) == 0


def test_the_first_apply_on_a_database_creates_the_marker_table_and_later_ones_find_their_markers(
    transactional_db, people, managed_cluster, managed_instance
):
    from tests.provisioning.helpers import schema_payload

    # given a database no plan has run on yet (no dbportal_meta.applied_change there)
    database = unique("fresh")
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        first, second = (approved_request(managed_instance, "schema", dict(schema_payload(unique("fs")),
                                                                           database=database),
                                          requester=people["alice"], enqueue=False) for _ in range(2))
        for request in (first, second):
            with transaction.atomic():
                enqueue_apply(request)
            # when each is applied (the first finds no marker table and creates it)
            assert _apply(request) == "applied"
            assert markers(managed_cluster, request.pk, database) == 1
        # and when the first's attempt is run again as if its commit had not been recorded, it
        # finds its marker in the same round trip as the lock and runs nothing
        ChangeRequest.objects.filter(pk=first.pk).update(status=RequestStatus.QUEUED)
        assert _apply(first) == "already_applied"
        assert markers(managed_cluster, first.pk, database) == 1
    finally:
        with admin_conn(managed_cluster, "postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))


def test_a_batch_merges_its_roles_and_schemas_into_the_stored_inventory_as_a_fresh_read_sees_them(
    transactional_db, people, managed_cluster, managed_instance, schema_with_tables
):
    from portal.models import InstanceInventory
    from provisioning.inventory import inventory_read, inventory_refresh
    from tests.provisioning.helpers import schema_payload

    # given an inventory read from the cluster (it knows a hand-made schema with a table)
    inventory_refresh(managed_instance)
    existing = schema_with_tables
    # when a login role and a group role (one batch) and a schema with a new owner are applied
    login, group, schema = unique("il"), unique("ig"), unique("is")
    requests = _queued_together(managed_instance, [
        ("role", role_payload(login, login=True)), ("role", role_payload(group)),
        ("schema", schema_payload(schema, owner=f"{schema}_own"))], people["alice"])
    for request in requests:  # the roles' batch, then the schema's (another database)
        _apply(request)
    assert all(r.status == RequestStatus.APPLIED for r in ChangeRequest.objects.filter(pk__in=[r.pk for r in requests]))
    # then the stored snapshot holds them exactly as a fresh read of the cluster does
    stored = InstanceInventory.objects.get(instance=managed_instance).snapshot
    fresh = inventory_read(managed_instance)
    for role in (login, group, f"{schema}_own"):
        assert stored["roles"][role] == fresh["roles"][role], role
    assert stored["databases"]["app"]["schemas"][schema] == fresh["databases"]["app"]["schemas"][schema]
    # and what it knew before is kept as it was (the hand-made schema's table list included)
    assert stored["databases"]["app"]["schemas"][existing] == {"owner": f"{existing}_owner", "tables": ["t"]}
    assert set(fresh["roles"]) <= set(stored["roles"]) and set(fresh["databases"]) == set(stored["databases"])


def test_an_instance_without_an_inventory_is_read_after_the_batch_instead(
    transactional_db, people, managed_cluster, managed_instance
):
    from portal.models import InstanceInventory

    InstanceInventory.objects.filter(instance=managed_instance).delete()
    role = unique("inr")
    (request,) = _queued_together(managed_instance, [("role", role_payload(role))], people["alice"])
    assert _apply(request) == "applied"
    assert role in InstanceInventory.objects.get(instance=managed_instance).snapshot["roles"]
