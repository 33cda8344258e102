"""Read replicas when things go wrong: a worker killed mid-backup, a failed build, a stopped primary,
authentication refused, and the whole journey through a killed worker.

One fresh small primary per module (tests/provisioning/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings
from django.db import connections as django_connections
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import InstanceStatus, RequestStatus
from portal.models import ChangeRequest, Execution, Instance
from provisioning.errors import PermanentTargetError, TransientTargetError
from provisioning.replicas import runner
from provisioning.replicas.local import HBA_LINE, REPLICATION_ROLE, build_dir, processes_using, replicas_root
from tests.provisioning.replica_helpers import (
    admin_conn_to,
    apply_now,
    poll,
    replica_request,
)

pytestmark = pytest.mark.slow


# -- crash safety -----------------------------------------------------------------------
def _test_database_url() -> str:
    """settings.DATABASE_URL pointed at pytest-django's test database (the socket host stays in the query)."""
    url = urlsplit(settings.DATABASE_URL)
    return urlunsplit(url._replace(path="/" + django_connections["default"].settings_dict["NAME"]))


def _worker_process(request_id: int, plan_hash: str, **env: str) -> subprocess.Popen:
    """A separate worker process running the executor on this test's database (committed rows)."""
    child_env = dict(os.environ, DJANGO_SETTINGS_MODULE="portal.settings.test", DATABASE_URL=_test_database_url(),
                     REDIS_URL=settings.REDIS_URL, PORTAL_VAR_DIR=str(settings.VAR_DIR), **env)
    code = ("import sys, django; django.setup(); from provisioning import engine; "
            "engine.apply(request_id=int(sys.argv[1]), plan_hash=sys.argv[2], worker='doomed')")
    return subprocess.Popen([sys.executable, "-c", code, str(request_id), plan_hash], env=child_env, cwd=settings.BASE_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.django_db(transaction=True)
def test_worker_killed_during_backup_then_retried_ends_with_exactly_one_replica(people, primary):
    # given a replica request picked up by a worker whose backup is throttled (surely still running)
    request = replica_request(primary, "sales_ro", people["alice"])
    folder = build_dir(runner.build_key(request))
    worker = _worker_process(request.pk, request.plan_hash, PORTAL_REPLICA_BACKUP_MAX_RATE="32k")

    # when the worker is SIGKILLed while pg_basebackup runs, with a half-made data directory
    def backup_running():
        return any(b"pg_basebackup" in Path("/proc", str(pid), "cmdline").read_bytes()
                   for pid in processes_using(folder) if Path("/proc", str(pid)).exists())

    try:
        poll(backup_running, "pg_basebackup")
        poll(lambda: any((folder / "data").iterdir()), "a half-made data directory")
    finally:
        worker.kill()
        worker.wait()
    assert Instance.objects.get(name="sales_ro").status == InstanceStatus.PROVISIONING
    request.refresh_from_db()
    assert request.status == RequestStatus.RUNNING

    # and the task is delivered again to another worker
    assert apply_now(request, worker="retry") == "applied"

    # then the request is applied, with exactly one replica, one data directory and one postmaster
    request.refresh_from_db()
    assert request.status == RequestStatus.APPLIED, request.status_detail
    replicas = list(Instance.objects.filter(replica_of=primary))
    assert [(r.name, r.status) for r in replicas] == [("sales_ro", InstanceStatus.REACHABLE)]
    assert sorted(p.name for p in replicas_root().iterdir()) == [folder.name]
    commands = [Path("/proc", str(pid), "cmdline").read_bytes() for pid in processes_using(folder)]
    assert not any(b"pg_basebackup" in c for c in commands)
    postmasters = [c for c in commands if c.split(b"\0")[0].endswith(b"postgres")]
    assert len(postmasters) == 1
    assert [e.outcome for e in Execution.objects.filter(request=request).order_by("attempt")] == [
        "worker_lost", "applied"]
    leftovers = AuditEvent.objects.get(action="replica.leftovers_removed", request_id=request.pk)
    assert leftovers.details["killed_pids"], "the orphaned pg_basebackup was still running and had to be killed"
    with admin_conn_to(replicas[0]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_a_failed_build_cleans_up_and_fails_the_request(people, primary, primary_cluster):
    # given a primary whose pg_hba.conf rejects the replication role before the portal's own line
    reject = f"host replication {REPLICATION_ROLE} 127.0.0.1/32 reject"
    hba = primary_cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    primary_cluster.hba_add(HBA_LINE)
    primary_cluster.hba_add(reject)
    request = replica_request(primary, "sales_ro", people["alice"])
    try:
        # when the executor applies the request
        assert apply_now(request) == "failed"
    finally:
        hba.write_text(original)
        primary_cluster.reload()
    # then the request failed with pg_basebackup's reason, and nothing is left behind
    request.refresh_from_db()
    assert request.status == RequestStatus.FAILED
    assert "pg_basebackup failed" in request.status_detail and "rejects" in request.status_detail
    assert Execution.objects.get(request=request).outcome == "failed"
    assert not Instance.objects.filter(name="sales_ro").exists()
    assert not build_dir(runner.build_key(request)).exists()
    assert processes_using(build_dir(runner.build_key(request))) == []
    assert AuditEvent.objects.filter(action="request.failed", request_id=request.pk).exists()
    assert AuditEvent.objects.filter(action="replica.build_abandoned", request_id=request.pk).exists()


def _basebackup_error(primary: Instance, password: str) -> Exception:
    """Run the driver's pg_basebackup against `primary` into a scratch build folder; return its error."""
    from provisioning.replicas.local import LocalReplicaDriver

    folder = build_dir(f"probe-{secrets.token_hex(4)}")
    try:
        with pytest.raises(Exception) as raised:  # the kind of error is what the callers check
            LocalReplicaDriver()._basebackup(primary=primary, name="probe", folder=folder, data_dir=folder / "data",
                                             password=password)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return raised.value


def test_a_backup_from_a_stopped_primary_is_retried_later(people, primary, primary_cluster):
    # given the portal's replication role and pg_hba line on the primary, and then the primary stopped
    from provisioning.replicas.local import LocalReplicaDriver

    driver = LocalReplicaDriver()
    password = driver._ensure_replication_role(primary)
    primary_cluster.hba_add(HBA_LINE)
    primary_cluster.stop()
    try:
        # when pg_basebackup runs against it
        error = _basebackup_error(primary, password)
    finally:
        primary_cluster.start()
    # then the failure is transient: the request goes back to the queue and the task retries
    classified = runner._classify(error)
    assert isinstance(classified, TransientTargetError), classified
    assert "pg_basebackup failed" in classified.message and "refused" in classified.message.lower()


def test_a_backup_refused_by_authentication_fails_the_request(people, primary, primary_cluster):
    # given a running primary and a wrong replication password
    from provisioning.replicas.local import LocalReplicaDriver

    LocalReplicaDriver()._ensure_replication_role(primary)
    primary_cluster.hba_add(HBA_LINE)
    primary_cluster.reload()
    # when pg_basebackup runs with it, then the failure is permanent: waiting would not help
    classified = runner._classify(_basebackup_error(primary, "not-the-password"))
    assert isinstance(classified, PermanentTargetError), classified
    assert "password authentication failed" in classified.message


# -- end to end through the outbox and real Celery workers -------------------------------
@pytest.mark.django_db(transaction=True)
def test_alice_asks_bob_approves_a_killed_worker_is_survived_and_alices_role_reads_the_replica(
        people, primary, celery_workers, wait_for_status, api_for):
    # given alice's team's schema and login role on the primary (made there by earlier requests)
    app_password = secrets.token_urlsafe(12)
    with admin_conn_to(primary, "sales") as conn:
        conn.execute("CREATE SCHEMA payments")
        conn.execute("CREATE TABLE payments.invoices (id int PRIMARY KEY, amount numeric)")
        conn.execute("INSERT INTO payments.invoices VALUES (1, 12.5)")
        conn.execute(sql.SQL("CREATE ROLE payments_app LOGIN PASSWORD {}").format(sql.Literal(app_password)))
        conn.execute("GRANT USAGE ON SCHEMA payments TO payments_app")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA payments TO payments_app")
    # and a worker (throttled backups) running
    # (DATABASE_URL: the fixture's own URL loses the embedded database's socket folder)
    slow = celery_workers.start(beat=False, env={"PORTAL_REPLICA_BACKUP_MAX_RATE": "32k",
                                                 "DATABASE_URL": _test_database_url()})
    # when alice asks for a replica and sees the steps as the plan
    response = api_for("alice").post("/api/v1/requests/", {
        "type": "replica", "instance": "sales_primary", "team": "payments",
        "justification": "reports read from a replica", "payload": {"name": "payments_ro"}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["risk"] == "medium" and all(line.startswith("-- ") for line in body["plan"])
    # and bob approves it (the approval queues it through the outbox)
    approved = api_for("bob").post(f"/api/v1/requests/{body['id']}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200, approved.json()
    request = ChangeRequest.objects.get(pk=body["id"])
    folder = build_dir(runner.build_key(request))

    # and that worker is SIGKILLed (with everything it started) in the middle of pg_basebackup
    def backup_running():
        return any(b"pg_basebackup" in Path("/proc", str(pid), "cmdline").read_bytes()
                   for pid in processes_using(folder) if Path("/proc", str(pid)).exists())

    try:
        poll(backup_running, "pg_basebackup in the worker")
    except AssertionError:
        request.refresh_from_db()
        raise AssertionError(f"{request.status} {request.status_detail}\n{slow.tail(60)}") from None
    finally:
        slow.kill()
    assert (folder / "data").exists()
    # and another worker comes up: its beat finds the request running with no live worker
    celery_workers.start(beat=True, env={"DATABASE_URL": _test_database_url()})

    # then the request ends applied with exactly one streaming replica
    request = wait_for_status(request.pk, {RequestStatus.APPLIED, RequestStatus.FAILED}, timeout=120)
    assert request.status == RequestStatus.APPLIED, request.status_detail
    listed = api_for("alice").get("/api/v1/instances/", {"kind": "local"}).json()["results"]
    replicas = [i for i in listed if i["replica_of"] == "sales_primary"]
    assert [(i["name"], i["status"]) for i in replicas] == [("payments_ro", InstanceStatus.REACHABLE)]
    assert sorted(p.name for p in replicas_root().iterdir()) == [folder.name]
    outcomes = list(Execution.objects.filter(request=request).order_by("attempt").values_list("outcome", flat=True))
    assert outcomes[0] == "worker_lost" and outcomes[-1] == "applied"
    # and alice's role logs in to the replica and reads the replicated schema
    with psycopg.connect(host="127.0.0.1", port=replicas[0]["port"], user="payments_app", password=app_password,
                         dbname="sales", connect_timeout=5) as conn:
        assert conn.execute("SELECT amount FROM payments.invoices WHERE id = 1").fetchone()[0] == 12.5
