"""Fault injection with real processes: a worker SIGKILLed mid-plan, the broker stopped, the
target cluster stopped. Every request ends applied exactly once (or failed, then retried)."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import transaction
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import Environment, InstanceKind, InstanceStatus, RequestStatus
from portal.models import ChangeRequest, Execution, Instance
from provisioning.clusters import LocalCluster, free_port
from provisioning.outbox import enqueue_apply
from tests.fixtures.celery import RedisServer, publishing_to, wait_until
from tests.provisioning.helpers import (
    admin_conn,
    approved_request,
    grant_payload,
    markers,
    role_payload,
    schema_payload,
    unique,
)
from tests.support.durability import without_fsync

pytestmark = pytest.mark.slow



def _blocked_backend(cluster, statement_start: str) -> int | None:
    with admin_conn(cluster) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbportal' AND wait_event_type = 'Lock'"
            " AND query LIKE %s", (statement_start + "%",)).fetchone()
    return row[0] if row else None


def test_a_worker_killed_mid_plan_is_recovered_and_applies_exactly_once(
    transactional_db, people, managed_cluster, managed_instance, celery_workers, wait_for_status
):
    # given a schema with a table and a role, applied by a first worker
    celery_workers.stop_all()  # workers of other tests must not take this one's messages
    first = celery_workers.start()
    schema, reader = unique("kill"), unique("reader")
    for request in (approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
                    approved_request(managed_instance, "role", role_payload(reader), requester=people["alice"])):
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader + "_other")))
    # and the test holding the table's catalog row (an open transaction changing its ACL), so the
    # plan's second statement blocks after its first one ran
    blocker = admin_conn(managed_cluster)
    blocker.autocommit = False
    blocker.execute(sql.SQL("GRANT SELECT ON {}.t TO {}").format(sql.Identifier(schema), sql.Identifier(reader + "_other")))
    try:
        request = approved_request(managed_instance, "grant", grant_payload(reader, schema, ["SELECT"]),
                                   requester=people["alice"])
        wait_until(lambda: _blocked_backend(managed_cluster, "GRANT SELECT ON ALL TABLES"), timeout=60,
                   interval=0.02, message="the plan to block on the test's lock")
        # when the worker is SIGKILLed in the middle of the plan
        first.kill()
    finally:
        blocker.rollback()
        blocker.close()
    assert ChangeRequest.objects.get(pk=request.pk).status == RequestStatus.RUNNING
    assert markers(managed_cluster, request.pk) == 0  # the half-run transaction left nothing
    # and a new worker starts
    celery_workers.start()
    # then the request ends applied, once: one marker, the privilege present, one applied attempt
    request = wait_for_status(request.pk, {"applied", "failed"}, timeout=90)
    assert request.status == RequestStatus.APPLIED, request.status_detail
    assert markers(managed_cluster, request.pk) == 1
    outcomes = list(Execution.objects.filter(request=request).order_by("attempt").values_list("outcome", flat=True))
    assert outcomes[0] == "worker_lost" and outcomes[-1] == "applied"
    assert outcomes.count("applied") + outcomes.count("already_applied") == 1
    assert AuditEvent.objects.filter(request_id=request.pk, action="request.applied").count() == 1
    assert AuditEvent.objects.filter(request_id=request.pk, action="request.recovered").exists()
    with admin_conn(managed_cluster) as conn:
        assert conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (reader, f"{schema}.t")).fetchone()[0]


def test_requests_approved_while_the_broker_is_down_are_all_applied_once_it_is_back(
    transactional_db, people, managed_cluster, managed_instance, celery_workers, wait_for_status, tmp_path
):
    # given a dedicated broker and a worker on it
    broker = RedisServer(tmp_path / "broker").start()
    try:
        celery_workers.stop_all()
        celery_workers.start(broker_url=broker.url)
        with publishing_to(broker.url):
            # when the broker stops and five requests are approved meanwhile
            broker.stop()
            names = [unique("outage") for _ in range(5)]
            requests = [approved_request(managed_instance, "role", role_payload(name), requester=people["alice"])
                        for name in names]
            # then the approvals succeed, the requests wait queued with unsent outbox rows
            assert {r.status for r in ChangeRequest.objects.filter(pk__in=[r.pk for r in requests])} == {"queued"}
            # and when the broker is back, every request is applied exactly once
            broker.start()
            for request in requests:
                done = wait_for_status(request.pk, {"applied", "failed"}, timeout=120)
                assert done.status == RequestStatus.APPLIED, done.status_detail
    finally:
        broker.stop()
    for request in requests:
        assert markers(managed_cluster, request.pk, "postgres") == 1
        assert Execution.objects.filter(request=request).count() == 1
        assert AuditEvent.objects.filter(request_id=request.pk, action="request.applied").count() == 1
    with admin_conn(managed_cluster, "postgres") as conn:
        found = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchone()[0]
    assert found == len(names)


@pytest.fixture
def stoppable_instance(transactional_db):
    """A cluster of its own (stopping the session's would disturb other tests) and its Instance."""
    data_dir = Path(settings.VAR_DIR) / "clusters" / f"stoppable-{uuid.uuid4().hex[:6]}"
    cluster = LocalCluster(data_dir=data_dir, port=free_port())
    password = secrets.token_urlsafe(18)
    cluster.initdb(auth_host="scram-sha-256", superuser_password=password)
    cluster.start()
    cluster.wait_ready()
    without_fsync(cluster.socket_conninfo())
    instance = Instance(name=f"stoppable-{uuid.uuid4().hex[:6]}", environment=Environment.DEV,
                        kind=InstanceKind.LOCAL, host="127.0.0.1", port=cluster.port, database="postgres",
                        admin_user="postgres", data_dir=str(data_dir), status=InstanceStatus.REACHABLE)
    instance.admin_password = password
    instance.save()
    yield cluster, instance
    cluster.remove()


def test_a_stopped_target_is_retried_then_failed_clearly_and_retry_applies_it_later(
    people, stoppable_instance, celery_workers, wait_for_status
):
    cluster, instance = stoppable_instance
    # given workers that retry twice with short backoff, and the target cluster stopped
    celery_workers.stop_all()
    celery_workers.start(env={"PORTAL_APPLY_MAX_RETRIES": "2", "PORTAL_APPLY_BACKOFF_MAX_SECONDS": "1"})
    cluster.stop()
    name = unique("down")
    # when a request is approved
    request = approved_request(instance, "role", role_payload(name), requester=people["alice"])
    # then it is tried three times (the first and two retries), then fails with a clear message
    request = wait_for_status(request.pk, "failed", timeout=120)
    assert "connection refused" in request.status_detail
    outcomes = list(Execution.objects.filter(request=request).order_by("attempt").values_list("outcome", flat=True))
    assert outcomes == ["retrying", "retrying", "failed"]
    assert AuditEvent.objects.filter(request_id=request.pk, action="request.retrying").count() == 2
    # and when the cluster is back and the request is retried, it is applied
    cluster.start()
    cluster.wait_ready()
    with transaction.atomic():
        enqueue_apply(ChangeRequest.objects.get(pk=request.pk))
    request = wait_for_status(request.pk, {"applied", "failed"}, timeout=60)
    assert request.status == RequestStatus.APPLIED, request.status_detail
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)).fetchone()[0] == 1
        marker_rows = conn.execute("SELECT count(*) FROM dbportal_meta.applied_change WHERE request_id = %s",
                                   (request.pk,)).fetchone()[0]
    assert marker_rows == 1
