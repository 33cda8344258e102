"""Monitoring (#21) on the screens and the API: who sees which figures, ending a blocking session,
thresholds set on the page, each replica's lag."""
from __future__ import annotations

import secrets
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import InstanceStatus
from portal.models import AlertThreshold, Instance, MonitoringSample
from portal.services.monitoring import sample_store
from provisioning.monitoring import take_sample
from tests.portal.monitoring_helpers import Blocker
from tests.provisioning.helpers import admin_conn, unique
from tests.support.assets import assert_only_own_assets

pytestmark = pytest.mark.slow



# --- pages and API: who sees what -----------------------------------------------------------------

@pytest.fixture
def two_teams_tables(managed_cluster, managed_instance, people):
    """A schema of payments (alice's team) and one of analytics (dave's), each with a table, sampled."""
    from portal.models import ManagedSchema, Team

    made = []
    with admin_conn(managed_cluster, "app") as conn:
        for team, schema in (("payments", unique("pay")), ("analytics", unique("ana"))):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("CREATE TABLE {}.big AS SELECT g AS id FROM generate_series(1, 2000) g").format(
                sql.Identifier(schema)))
            ManagedSchema.objects.create(instance=managed_instance, database="app", name=schema,
                                         owner_role="postgres", team=Team.objects.get(name=team))
            made.append(schema)
    body, duration_ms = take_sample(managed_instance)
    sample_store(managed_instance, body, duration_ms=duration_ms)
    yield dict(zip(("payments", "analytics"), made, strict=True))
    with admin_conn(managed_cluster, "app") as conn:
        for schema in made:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _schemas(answer) -> set[str]:
    return {t["schema"] for t in answer.json()["tables"]}


def test_a_team_sees_its_own_schemas_figures_and_a_reviewer_everything(managed_instance, api_for, two_teams_tables,
                                                                       django_assert_max_num_queries):
    url = f"/api/v1/instances/{managed_instance.pk}/monitoring/"
    alice = api_for("alice").get(url)
    assert alice.status_code == 200 and alice.json()["scope"] == "team"
    assert two_teams_tables["payments"] in _schemas(alice)
    assert two_teams_tables["analytics"] not in _schemas(alice)
    assert alice.json()["databases"] == [] and alice.json()["metrics"]["connections"] >= 0
    dave = api_for("dave").get(url)
    assert two_teams_tables["analytics"] in _schemas(dave) and two_teams_tables["payments"] not in _schemas(dave)
    bob = api_for("bob")
    with django_assert_max_num_queries(12):
        everything = bob.get(url)
    assert everything.json()["scope"] == "all"
    assert set(two_teams_tables.values()) <= _schemas(everything)
    assert {d["name"] for d in everything.json()["databases"]} >= {"app", "postgres"}
    # the history, for everyone; a bad window is a 400 naming the field
    series = api_for("alice").get(url + "series/?hours=1")
    assert series.status_code == 200 and len(series.json()["t"]) == 1
    assert set(series.json()["series"]) >= {"connections", "max_xid_age", "replication_lag_bytes"}
    for bad in ("0", "nope", "1e9", "nan"):
        answer = api_for("alice").get(url + f"series/?hours={bad}")
        assert answer.status_code == 400 and "hours" in answer.json()["errors"], bad
    # an unknown instance is a 404
    assert api_for("alice").get("/api/v1/instances/999999/monitoring/").status_code == 404


def test_the_page_shows_sessions_with_what_blocks_what(managed_instance, managed_cluster, lock_table, client, people,
                                                       django_assert_max_num_queries):
    blocker = Blocker(managed_cluster, lock_table)
    try:
        body, duration_ms = take_sample(managed_instance)
        sample_store(managed_instance, body, duration_ms=duration_ms)
    finally:
        blocker.release()
    client.force_login(people["bob"])
    with django_assert_max_num_queries(15):
        page = client.get(f"/instances/{managed_instance.pk}/monitoring/").content.decode()
    assert "sessions-table" in page and "chart-connections" in page and "monitoring-series" in page
    assert f"<td>{blocker.holder_pid}</td>" in page
    row = next(r for r in page.split("<tr") if f"<td>{blocker.waiter_pid}</td>" in r)
    assert f"<td>{blocker.holder_pid}</td>" in row  # waits for the holder
    assert "statements-unavailable" in page  # the embedded PostgreSQL has no pg_stat_statements
    assert_only_own_assets(page)


def test_only_an_admin_changes_a_threshold_over_the_api(managed_instance, api_for):
    url = f"/api/v1/instances/{managed_instance.pk}/monitoring/thresholds/"
    for persona in ("alice", "bob", "carol"):
        assert api_for(persona).put(url, {"kind": "wraparound", "value": 5}, format="json").status_code == 403
    admin = api_for("admin")
    assert admin.put(url, {"kind": "nope", "value": 5}, format="json").json()["errors"].keys() == {"kind"}
    assert admin.put(url, {"kind": "wraparound", "value": -5}, format="json").status_code == 400
    answer = admin.put(url, {"kind": "wraparound", "value": 5}, format="json")
    assert answer.status_code == 200
    row = next(t for t in answer.json()["results"] if t["kind"] == "wraparound")
    assert row == {"kind": "wraparound", "label": "transaction ID age", "default": settings.MONITORING_THRESHOLDS[
        "wraparound"], "override": True, "value": 5.0}
    off = admin.put(url, {"kind": "connections", "value": None}, format="json").json()["results"]
    assert next(t for t in off if t["kind"] == "connections")["value"] is None
    reset = admin.put(url, {"kind": "wraparound", "reset": True}, format="json").json()["results"]
    assert next(t for t in reset if t["kind"] == "wraparound")["override"] is False
    assert AuditEvent.objects.filter(action="monitoring.threshold_set", outcome="ok").count() == 3


# --- acting on it: ending a blocking session is a reviewed request -------------------------------

def test_ending_a_blocking_session_is_a_reviewed_request(managed_instance, managed_cluster, lock_table, api_for,
                                                         people):
    from portal.models import ChangeRequest, ManagedRole, Team
    from tests.portal.requests_helpers import apply_for_test

    # given a login role of payments (the portal's record of it) holding a row lock, and a session waiting
    role, password = unique("pay_app"), secrets.token_urlsafe(16)
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT UPDATE, SELECT ON public.{} TO {}").format(sql.Identifier(lock_table),
                                                                               sql.Identifier(role)))
    ManagedRole.objects.create(instance=managed_instance, name=role, login=True, team=Team.objects.get(name="payments"))
    holder = psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=role, password=password,
                             passfile="/dev/null")
    holder.execute(sql.SQL("UPDATE public.{} SET v = v + 1 WHERE id = 1").format(sql.Identifier(lock_table)))
    waiter = admin_conn(managed_cluster, "app")
    update = sql.SQL("UPDATE public.{} SET v = v + 10 WHERE id = 1").format(sql.Identifier(lock_table))
    thread = threading.Thread(target=waiter.execute, args=(update,), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            body, _ = take_sample(managed_instance)
            waiting = [s for s in body["sessions"] if s["pid"] == waiter.info.backend_pid and s["blocked_by"]]
            if waiting:
                break
            time.sleep(0.02)
        assert waiting[0]["blocked_by"] == [holder.info.backend_pid]
        # when alice asks to end the blocking session of her team's role
        payload = {"pid": holder.info.backend_pid, "role": role}
        body = {"type": "terminate", "instance": managed_instance.pk, "team": "payments",
                "justification": "it blocks the invoices job", "payload": payload}
        answer = api_for("alice").post("/api/v1/requests/", body, format="json")
        assert answer.status_code == 201, answer.json()
        request = ChangeRequest.objects.get(pk=answer.json()["id"])
        assert request.status == "submitted" and request.risk == "medium"
        assert request.plan == [f"SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE "
                                f"pid = {holder.info.backend_pid} AND usename = '{role}'"]
        # and nobody may end another team's or the waiting superuser's session this way
        assert api_for("dave").post("/api/v1/requests/", {**body, "team": "analytics"}, format="json").status_code \
            == 400
        other = api_for("alice").post("/api/v1/requests/", {**body, "payload": {"pid": waiter.info.backend_pid,
                                                                                "role": "postgres"}}, format="json")
        assert other.status_code == 400 and "payload.role" in other.json()["errors"]
        for bad in ({"pid": 0, "role": role}, {"pid": "1; SELECT 1", "role": role}, {"pid": 5}, {"pid": True, "role": role}):
            answer = api_for("alice").post("/api/v1/requests/", {**body, "payload": bad}, format="json")
            assert answer.status_code == 400, bad
        # the holder's session is untouched until a reviewer approves and it is applied
        assert holder.execute("SELECT 1").fetchone() == (1,)
        assert api_for("alice").post(f"/api/v1/requests/{request.pk}/approve/", {"comment": "mine"},
                                     format="json").status_code == 403
        approved = api_for("bob").post(f"/api/v1/requests/{request.pk}/approve/", {"comment": "ok"}, format="json")
        assert approved.status_code == 200, approved.json()
        apply_for_test(ChangeRequest.objects.get(pk=request.pk))
        # then the blocking session is gone and the waiting one went through
        thread.join(timeout=10)
        assert not thread.is_alive()
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
        assert AuditEvent.objects.filter(request_id=request.pk, action="request.approved").exists()
    finally:
        holder.close()
        waiter.close()
        with admin_conn(managed_cluster, "app") as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_an_admin_sets_a_threshold_on_the_page(managed_instance, client, people):
    url = f"/instances/{managed_instance.pk}/monitoring/thresholds/"
    client.force_login(people["bob"])
    assert client.post(url, {"kind": "wraparound", "value": "5", "action": "set"}).status_code == 403
    client.force_login(people["admin"])
    assert 'id="threshold-wraparound"' in client.get(f"/instances/{managed_instance.pk}/monitoring/").content.decode()
    answer = client.post(url, {"kind": "wraparound", "value": "5", "action": "set"}, follow=True)
    assert "now opens at 5" in answer.content.decode()
    assert AlertThreshold.objects.get(instance=managed_instance, kind="wraparound").value == 5.0
    for bad, reason in (({"kind": "wraparound", "value": "lots", "action": "set"}, "value: a number"),
                        ({"kind": "nope", "value": "1", "action": "set"}, "kind: must be one of"),
                        ({"kind": "wraparound", "value": "-1", "action": "set"}, "value: must be"),
                        ({"kind": "wraparound", "action": "drop"}, "action: set, off or reset")):
        assert reason in client.post(url, bad, follow=True).content.decode(), bad
    client.post(url, {"kind": "wraparound", "action": "reset"})
    assert not AlertThreshold.objects.filter(instance=managed_instance).exists()
    assert AuditEvent.objects.filter(action="monitoring.threshold_set", actor="admin").count() == 2



def test_the_instance_page_shows_each_replicas_lag_sparkline(managed_instance, client, people,
                                                             django_assert_max_num_queries):
    replica = Instance.objects.create(name="demo-r1", host="127.0.0.1", port=1, admin_user="x", replica_of=managed_instance,
                                      status=InstanceStatus.REACHABLE)
    now = timezone.now()
    for minutes, lag in ((120, 0.0), (60, 4096.0), (1, 1024.0)):
        MonitoringSample.objects.create(instance=replica, taken_at=now - timedelta(minutes=minutes),
                                        body={"metrics": {"replication_lag_bytes": lag}})
    client.force_login(people["alice"])
    with django_assert_max_num_queries(20):
        page = client.get(f"/instances/{managed_instance.pk}/").content.decode()
    assert 'class="lag-sparkline"' in page and "at most 4096 bytes" in page
    points = page.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 3 and points[1].endswith(",1.0")  # the highest lag at the top
