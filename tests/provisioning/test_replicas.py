"""Read replicas on real clusters: build, stream, refuse writes, health, promote, decommission, crash + retry.

One fresh small primary per module (not the shared managed_cluster): replicas change its
pg_hba.conf and roles, and a promote or a kill must not disturb other modules.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings
from django.db import connections as django_connections
from psycopg import errors, sql

from audit.models import AuditEvent
from portal.choices import Environment, InstanceKind, InstanceStatus, RequestStatus, RequestType
from portal.errors import InvalidPayload
from portal.models import ChangeRequest, Execution, Instance, Team
from portal.selectors.plan_context import plan_context_for
from provisioning import engine
from provisioning.clusters import LocalCluster
from provisioning.errors import PermanentTargetError, TransientTargetError
from provisioning.models import ReplicationCredential
from provisioning.plans import module_for, plan_hash, plan_text
from provisioning.replicas import runner
from provisioning.replicas.base import ensure_writable
from provisioning.replicas.local import HBA_LINE, REPLICATION_ROLE, build_dir, processes_using, replicas_root
from tests.fixtures.clusters import fresh_cluster

pytestmark = pytest.mark.slow

POLL_SECONDS = 15  # upper bound for "visible on the replica within seconds"


@pytest.fixture(scope="module")
def primary_cluster():
    cluster = fresh_cluster("replicas-primary", "sales")
    yield cluster
    _remove_all_replicas()
    cluster.remove()


def _remove_all_replicas() -> None:
    root = replicas_root()
    for pid in processes_using(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def primary(db, primary_cluster):
    """The module's cluster registered as local instance `sales_primary` (environment staging)."""
    if not primary_cluster.is_running():
        primary_cluster.start()
    instance = Instance(
        name="sales_primary", environment=Environment.STAGING, kind=InstanceKind.LOCAL, host="127.0.0.1",
        port=primary_cluster.port, database="postgres", admin_user="postgres",
        data_dir=str(primary_cluster.data_dir), status=InstanceStatus.REACHABLE, server_version="16",
    )
    instance.admin_password = primary_cluster.admin_password
    instance.save()
    yield instance
    _remove_all_replicas()


def _request(primary: Instance, name: str, requester) -> ChangeRequest:
    module = module_for(RequestType.REPLICA)
    payload = module.validate({"name": name}, plan_context_for(primary, None, requester, request_type="replica"))
    plan = plan_text(module.render(payload))
    return ChangeRequest.objects.create(
        type=RequestType.REPLICA, instance=primary, team=Team.objects.get(name="payments"), requester=requester,
        justification="read traffic for reports", payload=payload, plan=plan, plan_hash=plan_hash(plan),
        status=RequestStatus.QUEUED,
    )


@pytest.fixture
def build(people, primary):
    def make(name: str = "sales_ro") -> Instance:
        request = _request(primary, name, people["alice"])
        assert _apply(request) == "applied"
        request.refresh_from_db()
        assert request.status == RequestStatus.APPLIED, request.status_detail
        return Instance.objects.get(name=name)

    return make


def _apply(request: ChangeRequest, worker: str = "test") -> str:
    """What the apply task does: the executor claims the request and hands it to the replica runner."""
    return engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker=worker)


def _admin_conn(instance: Instance, dbname: str = "postgres", **kw) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=instance.port, user=instance.admin_user,
                           password=instance.admin_password, dbname=dbname, autocommit=True, **kw)


def _poll(fn, what: str):
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {POLL_SECONDS} s")
        time.sleep(0.05)


# -- the plan ---------------------------------------------------------------------------
def test_plan_is_the_steps_as_comment_lines_with_quoted_names(primary):
    module = module_for("replica")
    lines = plan_text(module.render(module.validate({"name": "sales_ro"}, plan_context_for(primary, None, None, request_type="replica"))))
    assert all(line.startswith("-- ") for line in lines)
    assert any("pg_basebackup -D" in line and "-R -X stream -c fast" in line for line in lines)
    assert any('"sales_ro"' in line for line in lines)
    assert any(f'"{REPLICATION_ROLE}"' in line for line in lines)
    assert module.database({"name": "sales_ro"}) is None


@pytest.mark.parametrize(("payload", "field"), [
    ({"name": "Sales"}, "payload.name"),
    ({"name": "1abc"}, "payload.name"),
    ({"name": "a" * 64}, "payload.name"),
    ({"name": ""}, "payload.name"),
    ({"name": "\ud800"}, "payload.name"),
    ({"name": "select"}, "payload.name"),
    ({"name": "pg_ro"}, "payload.name"),
    ({}, "payload.name"),
    ({"name": "ok", "port": 5}, "payload.port"),
    ({"name": "sales_primary"}, "payload.name"),  # taken by the primary itself
])
def test_bad_replica_payload_is_400_naming_the_field(primary, payload, field):
    with pytest.raises(InvalidPayload) as caught:
        module_for("replica").validate(payload, plan_context_for(primary, None, None, request_type="replica"))
    assert field in caught.value.errors


def test_replica_of_an_external_instance_or_of_a_replica_is_refused(db, primary):
    external = Instance.objects.create(name="ext", kind=InstanceKind.EXTERNAL, host="127.0.0.1", admin_user="x")
    with pytest.raises(InvalidPayload) as caught:
        module_for("replica").validate({"name": "r1"}, plan_context_for(external, None, None, request_type="replica"))
    assert "instance" in caught.value.errors
    replica = Instance.objects.create(name="r0", kind=InstanceKind.LOCAL, host="127.0.0.1", admin_user="x",
                                      replica_of=primary)
    with pytest.raises(InvalidPayload) as caught:
        module_for("replica").validate({"name": "r1"}, plan_context_for(replica, None, None, request_type="replica"))
    assert "instance" in caught.value.errors
    # and writes aimed at a replica are refused with the same field
    with pytest.raises(InvalidPayload) as caught:
        ensure_writable(replica)
    assert "read-only replica of sales_primary" in caught.value.errors["instance"][0]
    ensure_writable(primary)  # a primary takes writes


@pytest.mark.parametrize(("request_type", "payload"), [
    ("schema", {"database": "sales", "name": "billing"}),
    ("role", {"name": "billing_app", "login": True}),
    ("grant", {"role": "billing_app", "database": "sales", "schema": "billing", "privileges": ["SELECT"],
               "tables": "all"}),
    ("revoke", {"role": "billing_app", "database": "sales", "schema": "billing", "privileges": ["SELECT"],
                "tables": "all"}),
])
def test_write_requests_against_a_replica_are_400_on_instance(people, primary, request_type, payload):
    replica = Instance.objects.create(name="r0", kind=InstanceKind.LOCAL, host="127.0.0.1", admin_user="x",
                                      replica_of=primary)
    with pytest.raises(InvalidPayload) as caught:
        module_for(request_type).validate(payload, plan_context_for(
            replica, Team.objects.get(name="payments"), people["alice"], request_type=request_type))
    assert list(caught.value.errors) == ["instance"]


def test_submitting_a_write_request_against_a_replica_is_400_on_instance(people, primary, api_for):
    replica = Instance.objects.create(name="r0", kind=InstanceKind.LOCAL, host="127.0.0.1", admin_user="x",
                                      replica_of=primary, environment=primary.environment)
    for request_type, payload in [("schema", {"database": "sales", "name": "billing"}),
                                  ("role", {"name": "billing_app", "login": False}),
                                  ("grant", {"role": "billing_app", "database": "sales", "schema": "billing",
                                             "privileges": ["SELECT"]}),
                                  ("ddl", {"database": "sales", "schema": "billing",
                                           "sql": "CREATE TABLE t (id int)"})]:
        response = api_for("alice").post("/api/v1/requests/", {
            "type": request_type, "instance": replica.pk, "team": "payments", "justification": "x",
            "payload": payload}, format="json")
        assert response.status_code == 400, (request_type, response.json())
        assert "read-only replica of sales_primary" in response.json()["errors"]["instance"][0]
    assert not ChangeRequest.objects.exists()


def test_the_replication_role_cannot_be_requested(people, primary):
    with pytest.raises(InvalidPayload) as caught:
        module_for("role").validate({"name": REPLICATION_ROLE, "login": True}, plan_context_for(
            primary, Team.objects.get(name="payments"), people["alice"], request_type="role"))
    assert "reserved" in caught.value.errors["payload.name"][0]


# -- building and streaming -------------------------------------------------------------
def test_replica_request_ends_applied_streams_and_refuses_writes(build, primary, api_for):
    # given an approved replica request / when the runner applies it
    replica = build("sales_ro")
    # then it is registered as a reachable local replica of the primary with the primary's credentials
    assert replica.replica_of_id == primary.pk
    assert (replica.kind, replica.status, replica.host) == (InstanceKind.LOCAL, InstanceStatus.REACHABLE, "127.0.0.1")
    assert replica.port != primary.port
    request = ChangeRequest.objects.get(payload__name="sales_ro")
    execution = Execution.objects.get(request=request)
    assert execution.outcome == "applied"
    assert [s["sql"] for s in execution.statements] == request.plan
    actions = list(AuditEvent.objects.filter(request_id=request.pk).order_by("seq").values_list("action", flat=True))
    assert actions[0] == "request.running" and actions[-1] == "request.applied"
    assert [a for a in actions if a.startswith("replica.")] == [
        "replica.role_ensured", "replica.hba_configured", "replica.registered", "replica.backup_taken",
        "replica.started", "replica.caught_up", "replica.created"]
    assert actions.count("sql.executed") == len(request.plan)  # each step, as the executor logs statements
    # the portal's replication role has REPLICATION and nothing else; its password is nowhere in the log
    with _admin_conn(primary) as conn:
        attrs = conn.execute("SELECT rolreplication, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
                             "FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,)).fetchone()
        streaming = conn.execute("SELECT state FROM pg_stat_replication WHERE application_name = %s",
                                 ("sales_ro",)).fetchone()
    assert attrs == (True, False, False, False, False)
    assert streaming == ("streaming",)
    password = ReplicationCredential.objects.get(instance=primary).password
    assert not AuditEvent.objects.filter(details__icontains=password).exists()
    passfile = build_dir(f"request-{request.pk}") / "replication.pgpass"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600

    # when a table, a login role and a grant are written on the primary
    reader_password = secrets.token_urlsafe(12)
    with _admin_conn(primary, "sales") as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5), (2, 20)")
        conn.execute(sql.SQL("CREATE ROLE report_reader LOGIN PASSWORD {}").format(sql.Literal(reader_password)))
        conn.execute("GRANT SELECT ON orders TO report_reader")

    # then they are visible on the replica within seconds, and the reader can log in there and read
    def reader_sees_orders():
        try:
            with psycopg.connect(host="127.0.0.1", port=replica.port, user="report_reader", password=reader_password,
                                 dbname="sales", connect_timeout=2) as conn:
                return conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2
        except psycopg.Error:
            return False

    _poll(reader_sees_orders, "the table and the grant")

    # and a write on the replica fails: it is read-only
    with _admin_conn(replica, "sales") as conn, pytest.raises(errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO orders VALUES (3, 1)")

    # and the health job records it as reachable with its lag, shown by the API
    from portal.tasks import refresh_replica

    refresh_replica(replica.pk)  # the health job's task for this replica (beat fans out one per replica)
    replica.refresh_from_db()
    assert replica.status == InstanceStatus.REACHABLE
    assert replica.replica_lag_bytes is not None and replica.replica_lag_bytes >= 0
    assert replica.replica_lag_seconds is not None and replica.replica_lag_seconds >= 0
    body = api_for("alice").get(f"/api/v1/instances/{replica.pk}/").json()
    assert body["replica_of"] == "sales_primary"
    assert body["replica_lag_bytes"] == replica.replica_lag_bytes
    assert "admin_password" not in str(body) and password not in str(body)


def test_running_the_same_request_again_changes_nothing(build, primary):
    replica = build("sales_ro")
    request = ChangeRequest.objects.get(payload__name="sales_ro")
    pid = LocalCluster(data_dir=Path(replica.data_dir), port=replica.port).postmaster_pid()
    # a redelivered task for an applied request is skipped
    assert _apply(request) == "skipped"
    assert Execution.objects.filter(request=request).count() == 1
    # a worker that died after the build but before recording it: the next one finds the replica done
    ChangeRequest.objects.filter(pk=request.pk).update(status=RequestStatus.RUNNING)
    assert _apply(request, worker="second") == "applied"
    assert LocalCluster(data_dir=Path(replica.data_dir), port=replica.port).postmaster_pid() == pid
    assert Instance.objects.filter(replica_of=primary).count() == 1
    assert Execution.objects.filter(request=request).count() == 2


def test_killed_standby_postmaster_shows_unhealthy_after_the_health_job(build):
    from portal.tasks import refresh_replica

    replica = build("sales_ro")
    cluster = LocalCluster(data_dir=Path(replica.data_dir), port=replica.port)
    os.kill(cluster.postmaster_pid(), signal.SIGKILL)
    _poll(lambda: not cluster.is_running(), "the postmaster's exit")
    refresh_replica(replica.pk)
    replica.refresh_from_db()
    assert replica.status == InstanceStatus.UNHEALTHY
    assert "not running" in replica.status_detail
    assert AuditEvent.objects.filter(action="instance.status_changed", instance="sales_ro",
                                     outcome=InstanceStatus.UNHEALTHY).exists()


# -- admin actions ----------------------------------------------------------------------
def test_only_admins_promote_and_only_replicas(build, primary, api_for):
    replica = build("sales_ro")
    assert api_for("alice").post(f"/api/v1/instances/{replica.pk}/promote/").status_code == 403
    assert api_for("bob").post(f"/api/v1/instances/{replica.pk}/decommission/").status_code == 403
    assert api_for("admin").post("/api/v1/instances/999999/promote/").status_code == 404
    response = api_for("admin").post(f"/api/v1/instances/{primary.pk}/promote/")
    assert response.status_code == 409
    assert set(response.json()) == {"detail", "errors"}
    assert api_for("admin").post(f"/api/v1/instances/{primary.pk}/decommission/").status_code == 409


@pytest.mark.parametrize("action", ["promote", "decommission"])
@pytest.mark.parametrize(("username", "expected"), [
    (None, {401, 403}), ("alice", {403}), ("dave", {403}), ("bob", {403}), ("carol", {403}), ("admin", {409}),
])
def test_replica_action_permission_matrix(people, primary, api_for, action, username, expected):
    # a replica still being built: admins get a 409, everyone else is refused before anything runs
    replica = Instance.objects.create(name="r0", kind=InstanceKind.LOCAL, host="127.0.0.1", admin_user="x",
                                      replica_of=primary, status=InstanceStatus.PROVISIONING)
    response = api_for(username).post(f"/api/v1/instances/{replica.pk}/{action}/")
    assert response.status_code in expected
    assert set(response.json()) == {"detail", "errors"}
    replica.refresh_from_db()
    assert replica.status == InstanceStatus.PROVISIONING and replica.replica_of_id == primary.pk


def test_promote_makes_the_replica_a_writable_primary(build, api_for):
    replica = build("sales_ro")
    response = api_for("admin").post(f"/api/v1/instances/{replica.pk}/promote/")
    assert response.status_code == 200, response.json()
    assert response.json()["replica_of"] is None
    replica.refresh_from_db()
    assert replica.replica_of is None and replica.status == InstanceStatus.REACHABLE
    with _admin_conn(replica, "sales") as conn:
        conn.execute("CREATE TABLE written_after_promote (id int)")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    event = AuditEvent.objects.get(action="replica.promoted")
    assert (event.actor, event.instance, event.details["former_primary"]) == ("admin", "sales_ro", "sales_primary")
    # a primary now: promoting again is a conflict
    assert api_for("admin").post(f"/api/v1/instances/{replica.pk}/promote/").status_code == 409


def test_decommission_stops_removes_and_retires(build, api_for):
    replica = build("sales_ro")
    folder = Path(replica.data_dir).parent
    assert processes_using(folder)
    response = api_for("admin").post(f"/api/v1/instances/{replica.pk}/decommission/")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == InstanceStatus.RETIRED
    assert not folder.exists()
    assert processes_using(folder) == []
    with pytest.raises(psycopg.OperationalError):
        _admin_conn(replica, connect_timeout=2).close()
    assert AuditEvent.objects.filter(action="replica.decommissioned", actor="admin", instance="sales_ro").exists()
    assert api_for("admin").post(f"/api/v1/instances/{replica.pk}/decommission/").status_code == 409


def test_instance_page_shows_replicas_with_lag_and_admin_confirmations(build, primary, web_for):
    replica = build("sales_ro")
    page = web_for("alice").get(f"/instances/{primary.pk}/").content.decode()
    assert "sales_ro" in page and "Lag" in page
    alice_view = web_for("alice").get(f"/instances/{replica.pk}/").content.decode()
    assert "Promote" not in alice_view
    assert web_for("alice").post(f"/instances/{replica.pk}/promote/").status_code == 403
    admin_view = web_for("admin").get(f"/instances/{replica.pk}/").content.decode()
    assert "Promote sales_ro in staging" in admin_view
    assert "Decommission sales_ro in staging" in admin_view
    assert "deletes its data directory" in admin_view
    response = web_for("admin").post(f"/instances/{replica.pk}/decommission/")
    assert response.status_code == 302
    replica.refresh_from_db()
    assert replica.status == InstanceStatus.RETIRED


def test_reboot_starts_primaries_before_their_replicas(build, primary, primary_cluster):
    from portal.services.instances import local_instances_start

    replica = build("sales_ro")
    standby = LocalCluster(data_dir=Path(replica.data_dir), port=replica.port)
    standby.stop()
    primary_cluster.stop()
    started = local_instances_start()
    assert started == ["sales_primary", "sales_ro"]

    def streaming():
        with _admin_conn(primary) as conn:
            return conn.execute("SELECT 1 FROM pg_stat_replication WHERE application_name = 'sales_ro' "
                                "AND state = 'streaming'").fetchone()

    _poll(streaming, "streaming after restart")


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
    request = _request(primary, "sales_ro", people["alice"])
    folder = build_dir(runner.build_key(request))
    worker = _worker_process(request.pk, request.plan_hash, PORTAL_REPLICA_BACKUP_MAX_RATE="32k")

    # when the worker is SIGKILLed while pg_basebackup runs, with a half-made data directory
    def backup_running():
        return any(b"pg_basebackup" in Path("/proc", str(pid), "cmdline").read_bytes()
                   for pid in processes_using(folder) if Path("/proc", str(pid)).exists())

    try:
        _poll(backup_running, "pg_basebackup")
        _poll(lambda: any((folder / "data").iterdir()), "a half-made data directory")
    finally:
        worker.kill()
        worker.wait()
    assert Instance.objects.get(name="sales_ro").status == InstanceStatus.PROVISIONING
    request.refresh_from_db()
    assert request.status == RequestStatus.RUNNING

    # and the task is delivered again to another worker
    assert _apply(request, worker="retry") == "applied"

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
    with _admin_conn(replicas[0]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_a_failed_build_cleans_up_and_fails_the_request(people, primary, primary_cluster):
    # given a primary whose pg_hba.conf rejects the replication role before the portal's own line
    reject = f"host replication {REPLICATION_ROLE} 127.0.0.1/32 reject"
    hba = primary_cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    primary_cluster.hba_add(HBA_LINE)
    primary_cluster.hba_add(reject)
    request = _request(primary, "sales_ro", people["alice"])
    try:
        # when the executor applies the request
        assert _apply(request) == "failed"
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
    with _admin_conn(primary, "sales") as conn:
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
        _poll(backup_running, "pg_basebackup in the worker")
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
