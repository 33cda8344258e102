"""Read replicas on real clusters: the plan, bad payloads, build, stream, refuse writes, health, promote,
decommission, reboot order.

One fresh small primary per module (tests/provisioning/conftest.py). Crashes and retries are in
test_replica_failures.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from audit.models import AuditEvent
from portal.choices import InstanceKind, InstanceStatus, RequestStatus
from portal.errors import InvalidPayload
from portal.models import ChangeRequest, Execution, Instance, Team
from portal.selectors.plan_context import plan_context_for
from provisioning.clusters import LocalCluster
from provisioning.models import ReplicationCredential
from provisioning.plans import module_for, plan_text
from provisioning.replicas.base import ensure_writable
from provisioning.replicas.local import REPLICATION_ROLE, build_dir, processes_using
from tests.provisioning.replica_helpers import (
    admin_conn_to,
    apply_now,
    poll,
)

pytestmark = pytest.mark.slow


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
    with admin_conn_to(primary) as conn:
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
    with admin_conn_to(primary, "sales") as conn:
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

    poll(reader_sees_orders, "the table and the grant")

    # and a write on the replica fails: it is read-only
    with admin_conn_to(replica, "sales") as conn, pytest.raises(errors.ReadOnlySqlTransaction):
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
    assert apply_now(request) == "skipped"
    assert Execution.objects.filter(request=request).count() == 1
    # a worker that died after the build but before recording it: the next one finds the replica done
    ChangeRequest.objects.filter(pk=request.pk).update(status=RequestStatus.RUNNING)
    assert apply_now(request, worker="second") == "applied"
    assert LocalCluster(data_dir=Path(replica.data_dir), port=replica.port).postmaster_pid() == pid
    assert Instance.objects.filter(replica_of=primary).count() == 1
    assert Execution.objects.filter(request=request).count() == 2


def test_killed_standby_postmaster_shows_unhealthy_after_the_health_job(build):
    from portal.tasks import refresh_replica

    replica = build("sales_ro")
    cluster = LocalCluster(data_dir=Path(replica.data_dir), port=replica.port)
    os.kill(cluster.postmaster_pid(), signal.SIGKILL)
    poll(lambda: not cluster.is_running(), "the postmaster's exit")
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
    with admin_conn_to(replica, "sales") as conn:
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
        admin_conn_to(replica, connect_timeout=2).close()
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
        with admin_conn_to(primary) as conn:
            return conn.execute("SELECT 1 FROM pg_stat_replication WHERE application_name = 'sales_ro' "
                                "AND state = 'streaming'").fetchone()

    poll(streaming, "streaming after restart")
