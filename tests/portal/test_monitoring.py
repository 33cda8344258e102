"""Monitoring (#21) on real clusters: samples, alerts opened and cleared, compaction, thresholds.

A blocked session and a long transaction are made for real: one psycopg connection holds a row
lock in an open transaction, a second waits for it on another thread (tests/portal/monitoring_helpers.py).
The pages and the API over the samples are in test_monitoring_pages.py.
"""
from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from portal.choices import Environment, InstanceKind, InstanceStatus
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import Alert, AlertThreshold, Instance, MonitoringSample
from portal.models.monitoring import SampleResolution
from portal.services.monitoring import alert_threshold_set, monitoring_compact, sample_failure_store, sample_store
from portal.tasks import monitoring_sample_instance
from provisioning.clusters import LocalCluster, free_port
from provisioning.monitoring import SampleFailed, take_sample
from tests.portal.monitoring_helpers import Blocker, open_alerts
from tests.provisioning.test_activity import connected_role, least_privilege_instance  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def test_a_blocked_session_and_a_long_transaction_show_up_alert_and_clear(managed_instance, managed_cluster,
                                                                          lock_table):
    # given the long-transaction threshold lowered to one second for this instance
    AlertThreshold.objects.create(instance=managed_instance, kind="long_transaction", value=1.0)
    blocker = Blocker(managed_cluster, lock_table)
    try:
        time.sleep(1.2)
        # when the instance is sampled
        body, duration_ms = take_sample(managed_instance)
        sample_store(managed_instance, body, duration_ms=duration_ms)
        # then the waiting session names the holder, the holder's transaction is over a second old
        waiting = next(s for s in body["sessions"] if s["pid"] == blocker.waiter_pid)
        assert waiting["blocked_by"] == [blocker.holder_pid]
        holder = next(s for s in body["sessions"] if s["pid"] == blocker.holder_pid)
        assert holder["state"] == "idle in transaction" and holder["xact_seconds"] >= 1
        assert holder["application"] == "blocker-test"
        assert body["metrics"]["blocked_sessions"] >= 1 and body["metrics"]["blocking_sessions"] >= 1
        assert body["metrics"]["idle_in_transaction"] >= 1
        assert body["metrics"]["longest_transaction_seconds"] >= 1
        assert body["connections"]["by_application"]["blocker-test"] == 1
        # and both alerts are open, once each, audited with the blocking pair named
        assert {"blocked_sessions", "long_transaction"} <= open_alerts(managed_instance)
        blocked = Alert.objects.get(instance=managed_instance, kind="blocked_sessions", status="open")
        assert f"waits for {blocker.holder_pid}" in blocked.detail
        opened = AuditEvent.objects.filter(action="monitoring.alert_opened", instance=managed_instance.name)
        assert opened.count() == 2 and set(opened.values_list("outcome", flat=True)) == {"opened"}
        # when sampled again while still blocked: no second alert of either kind
        body, duration_ms = take_sample(managed_instance)
        sample_store(managed_instance, body, duration_ms=duration_ms)
        assert Alert.objects.filter(instance=managed_instance).count() == 2
    finally:
        blocker.release()
    # when the lock is released and the instance sampled again
    body, duration_ms = take_sample(managed_instance)
    sample_store(managed_instance, body, duration_ms=duration_ms)
    # then the alerts are resolved, each audited
    assert open_alerts(managed_instance) == set()
    assert body["metrics"]["blocked_sessions"] == 0
    resolved = AuditEvent.objects.filter(action="monitoring.alert_resolved", instance=managed_instance.name)
    assert sorted(e.details["kind"] for e in resolved) == ["blocked_sessions", "long_transaction"]
    assert all(e.outcome == "resolved" for e in resolved)


def test_a_sample_holds_sizes_tables_xid_age_and_cache_hits(managed_instance, lock_table):
    body, duration_ms = take_sample(managed_instance)
    assert duration_ms > 0
    names = {d["name"] for d in body["databases"]}
    assert {"postgres", "app"} <= names
    app = next(d for d in body["databases"] if d["name"] == "app")
    assert app["size_bytes"] > 0 and app["xid_age"] >= 0
    table = next(t for t in body["tables"] if t["table"] == lock_table)
    assert table["database"] == "app" and table["schema"] == "public" and table["total_bytes"] > 0
    metrics = body["metrics"]
    assert metrics["max_xid_age"] > 0 and metrics["database_bytes"] > 0
    assert 0 < metrics["cache_hit_ratio"] <= 1
    assert metrics["connections_percent"] is not None and body["max_connections"] > 0
    # the embedded PostgreSQL has no pg_stat_statements: said so, the sample still taken
    assert body["statements"]["available"] is False and "not installed" in body["statements"]["reason"]
    # the query text of a session is never kept
    assert all("query" not in s for s in body["sessions"])


@pytest.fixture(scope="module")
def pg15_with_statements():
    """PostgreSQL 15 (Debian's binaries) with pg_stat_statements preloaded and installed."""
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("Debian's PostgreSQL 15 binaries are not on this machine")
    data_dir = Path(settings.VAR_DIR) / "clusters" / f"pg15-statements-{secrets.token_hex(3)}"
    cluster = LocalCluster(data_dir=data_dir, port=free_port(), bin_dir=PG15_BIN)
    cluster.admin_password = secrets.token_urlsafe(18)
    cluster.initdb(auth_host="scram-sha-256", superuser_password=cluster.admin_password)
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\nfsync = off\n")
    cluster.start()
    cluster.wait_ready()
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    yield cluster
    cluster.remove()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_top_statements_where_pg_stat_statements_is_loaded(db, pg15_with_statements):
    instance = Instance(name="pg15", environment=Environment.DEV, kind=InstanceKind.EXTERNAL, host="127.0.0.1",
                        port=pg15_with_statements.port, database="postgres", admin_user="postgres",
                        status=InstanceStatus.REACHABLE)
    instance.admin_password = pg15_with_statements.admin_password
    instance.save()
    with psycopg.connect(pg15_with_statements.socket_conninfo(), autocommit=True) as conn:
        for n in range(5):
            conn.execute("SELECT count(*) FROM pg_class WHERE relpages > %s", [n])
    body, _ = take_sample(instance)
    assert body["server_version_num"] // 10000 == 15
    statements = body["statements"]
    assert statements["available"] is True
    top = next(s for s in statements["top"] if "relpages" in s["query"])
    # normalised: the constant is a placeholder, never the value
    assert "$1" in top["query"] and top["calls"] >= 5 and top["role"] == "postgres"


def test_the_machines_pg15_without_the_library_loaded_says_not_available(db, external_pg):
    instance = Instance(name="ext15", environment=Environment.DEV, kind=InstanceKind.EXTERNAL,
                        host=external_pg["host"], port=external_pg["port"], database="postgres",
                        admin_user=external_pg["user"], status=InstanceStatus.REACHABLE)
    instance.save()
    with psycopg.connect(**external_pg) as conn:
        installed = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()[0]
    body, _ = take_sample(instance)
    assert body["server_version_num"] // 10000 == 15 and body["metrics"]["connections"] >= 0
    if not installed:
        assert body["statements"] == {"available": False,
                                      "reason": "pg_stat_statements is not installed in the maintenance database"}
    else:
        assert body["statements"]["available"] or "shared_preload_libraries" in body["statements"]["reason"]


def test_a_failed_sample_opens_one_alert_and_a_good_one_resolves_it(managed_instance, managed_cluster):
    # given an instance whose port nothing listens on
    down = Instance.objects.create(name="down", environment=Environment.DEV, kind=InstanceKind.EXTERNAL,
                                   host="127.0.0.1", port=free_port(), database="postgres", admin_user="postgres",
                                   status=InstanceStatus.REACHABLE)
    with pytest.raises(SampleFailed) as failure:
        take_sample(down)
    assert "refused" in str(failure.value)
    # when two samples fail (through the per-instance task, as beat runs it)
    assert monitoring_sample_instance(down.pk) == "failed"
    assert monitoring_sample_instance(down.pk) == "failed"
    # then one open alert, counting both
    alert = Alert.objects.get(instance=down, kind="sample_failed")
    assert alert.status == "open" and alert.value == 2 and "refused" in alert.detail
    assert MonitoringSample.objects.filter(instance=down, ok=False).count() == 2
    # when the instance answers again
    down.port, down.admin_password = managed_cluster.port, managed_cluster.admin_password
    down.save()
    assert monitoring_sample_instance(down.pk) == "ok"
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolved_at is not None
    # a good instance is unaffected
    assert monitoring_sample_instance(managed_instance.pk) == "ok"
    assert not Alert.objects.filter(instance=managed_instance).exists()


def test_a_threshold_override_can_turn_an_alert_off(managed_instance):
    sample_failure_store(managed_instance, "x")
    assert open_alerts(managed_instance) == {"sample_failed"}
    admin = _user("admin-t", admin=True)
    alert_threshold_set(instance=managed_instance, kind="sample_failed", value=None, actor=admin)
    sample_failure_store(managed_instance, "x")
    assert open_alerts(managed_instance) == set()
    event = AuditEvent.objects.get(action="monitoring.threshold_set")
    assert event.outcome == "ok" and event.details["kind"] == "sample_failed" and event.details["value"] is None


def _user(name: str, *, admin: bool = False):
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(name, password=secrets.token_urlsafe(12))
    if admin:
        user.groups.add(Group.objects.get_or_create(name="platform-admins")[0])
    return user


def test_only_an_admin_sets_thresholds_and_bad_values_are_refused(managed_instance):
    with pytest.raises(PolicyViolation):
        alert_threshold_set(instance=managed_instance, kind="wraparound", value=1.0, actor=_user("plain"))
    admin = _user("admin-u", admin=True)
    with pytest.raises(InvalidPayload) as bad_kind:
        alert_threshold_set(instance=managed_instance, kind="nope", value=1.0, actor=admin)
    assert "kind" in bad_kind.value.errors
    for value in (-1, float("nan"), float("inf"), "5"):
        with pytest.raises(InvalidPayload) as bad_value:
            alert_threshold_set(instance=managed_instance, kind="wraparound", value=value, actor=admin)
        assert "value" in bad_value.value.errors
    assert not AlertThreshold.objects.exists()
    assert not AuditEvent.objects.filter(action="monitoring.threshold_set").exists()


def test_compaction_folds_old_raw_samples_into_hours_and_drops_past_retention(managed_instance):
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    old_hour = now - timedelta(hours=settings.MONITORING_RAW_HOURS + 3)
    for minute, connections in ((0, 2.0), (10, 4.0), (20, 9.0)):
        MonitoringSample.objects.create(instance=managed_instance, taken_at=old_hour.replace(minute=minute),
                                        body={"metrics": {"connections": connections, "cache_hit_ratio": None}})
    recent = MonitoringSample.objects.create(instance=managed_instance, taken_at=now, body={"metrics": {}})
    ancient = MonitoringSample.objects.create(instance=managed_instance, resolution=SampleResolution.HOUR,
                                              taken_at=now - timedelta(days=settings.MONITORING_RETENTION_DAYS + 1),
                                              body={"metrics": {}})
    result = monitoring_compact(now=now)
    assert result == {"folded": 3, "hours": 1, "deleted": 1}
    hour = MonitoringSample.objects.get(instance=managed_instance, resolution=SampleResolution.HOUR)
    assert hour.taken_at == old_hour.replace(minute=0)
    assert hour.body["metrics"]["connections"] == 5.0 and hour.body["max"]["connections"] == 9.0
    assert hour.body["samples"] == 3
    assert MonitoringSample.objects.filter(pk=recent.pk).exists()
    assert not MonitoringSample.objects.filter(pk=ancient.pk).exists()
    # idempotent: a second run folds nothing
    assert monitoring_compact(now=now)["folded"] == 0


def test_the_latest_samples_are_gauges_in_metrics_labelled_by_instance(managed_instance, client, lock_table,
                                                                       django_assert_max_num_queries):
    # given an older and a newer sample of the instance, and an open alert
    body, duration_ms = take_sample(managed_instance)
    old = dict(body, metrics=dict(body["metrics"], connections=999.0))
    sample_store(managed_instance, old, duration_ms=duration_ms, at=timezone.now() - timedelta(minutes=1))
    sample_store(managed_instance, body, duration_ms=duration_ms)
    sample_failure_store(Instance.objects.create(name="gone", host="127.0.0.1", port=1, admin_user="x",
                                                 status=InstanceStatus.UNREACHABLE), "connection refused")
    # when Prometheus scrapes /metrics from loopback
    with django_assert_max_num_queries(12):
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    text = response.content.decode()
    # then the portal's own metrics are there, and the newest sample's figures labelled by instance
    assert response.status_code == 200 and "django_http_requests" in text
    connections = f'dbportal_instance_connections{{instance="{managed_instance.name}"}} '
    line = next(line for line in text.splitlines() if line.startswith(connections))
    assert float(line.split()[-1]) == body["metrics"]["connections"]
    assert f'dbportal_instance_up{{instance="{managed_instance.name}"}} 1.0' in text
    assert 'dbportal_instance_up{instance="gone"} 0.0' in text
    assert f'dbportal_instance_database_size_bytes{{database="app",instance="{managed_instance.name}"}}' in text
    assert 'dbportal_instance_alert_open{instance="gone",kind="sample_failed"} 1.0' in text
    assert "dbportal_instance_max_xid_age" in text and "dbportal_instance_cache_hit_ratio" in text
    # and nothing of it for a scraper outside the allowed addresses
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


def test_an_alert_is_mailed_to_reviewers_and_admins(managed_instance, people, mailoutbox):
    sample_failure_store(managed_instance, "connection refused")
    alert = Alert.objects.get(instance=managed_instance, kind="sample_failed")
    from portal.services.notifications import alert_notify_send

    sent = alert_notify_send(alert.pk, "opened")
    expected = sorted(u.email for u in people.values() if u.username in ("admin", "bob") and u.email)
    assert expected and set(expected) <= set(sent["email"])
    assert "carol" not in " ".join(sent["email"]) and "alice" not in " ".join(sent["email"])
    assert mailoutbox[-1].subject.startswith(f"[dbportal] {managed_instance.name}:")
    assert '"event": "monitoring.alert_opened"' in mailoutbox[-1].body


# --- the beat job fans out: a hung instance never delays the others ------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_hung_instance_does_not_delay_the_others_samples(people, managed_instance, celery_workers):
    from portal.tasks import monitoring_sample
    from tests.fixtures.celery import wait_until
    from tests.provisioning.test_fanout import HungServer, _hung_instance

    # given three hung clusters dispatched before the good instance, on a 4-slot worker
    hung = HungServer()
    worker = None
    try:
        for n in range(3):
            _hung_instance(f"aa-hung-{n}", hung.port)
        worker = celery_workers.start(pool="threads", concurrency=4, beat=False)
        # when beat's monitoring job runs: it only enqueues, one task per instance
        assert monitoring_sample() == 4
        # then the good instance's sample is stored while the hung ones still wait on their connects
        wait_until(lambda: MonitoringSample.objects.filter(instance=managed_instance, ok=True).exists(),
                   timeout=60, message="the good instance's sample")
        assert hung.waiting() >= 1, "the hung instances' samples ended first: the good one was not sampled beside them"
        # and each hung instance's sample fails on its own connect timeout, opening its alert
        wait_until(lambda: MonitoringSample.objects.filter(instance__name__startswith="aa-hung-", ok=False).count() == 3,
                   timeout=60, message="the hung instances' failed samples")
        assert Alert.objects.filter(instance__name__startswith="aa-hung-", kind="sample_failed",
                                    status="open").count() == 3
    finally:
        if worker is not None:
            worker.stop()  # no task of it may still hold the portal database when the test's flush runs
        hung.close()


def test_an_alert_reaches_the_webhooks_of_teams_owning_schemas_there_without_the_sessions(
        managed_instance, people, django_capture_on_commit_callbacks):
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from portal.models import ManagedSchema, Team
    from portal.services.notifications import alert_notify_send

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
        payments.webhook_url = f"http://127.0.0.1:{server.server_port}/hook"
        payments.save()
        analytics.webhook_url = f"http://127.0.0.1:{server.server_port}/other"
        analytics.save()
        ManagedSchema.objects.create(instance=managed_instance, database="app", name="pay_s", owner_role="x",
                                     team=payments)
        AlertThreshold.objects.create(instance=managed_instance, kind="blocked_sessions", value=1)
        body = {"metrics": {"blocked_sessions": 1.0},
                "sessions": [{"pid": 11, "role": "secret_role", "blocked_by": [12], "state": "active"}]}
        # the notification is published only after the alert's transaction commits
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            sample_store(managed_instance, body, duration_ms=1.0)
        assert [c for c in callbacks if c.__qualname__.startswith("_open.")]  # besides the audit chainer's
        alert = Alert.objects.get(instance=managed_instance, kind="blocked_sessions")
        assert "secret_role" in alert.detail
        sent = alert_notify_send(alert.pk, "opened")
        # then payments (owning a schema there) hears of it, analytics (owning none) does not
        assert sent["webhooks"] == {"payments": "204"}
        assert len(received) == 1 and received[0]["event"] == "monitoring.alert_opened"
        assert received[0]["alert"]["kind"] == "blocked_sessions" and received[0]["alert"]["detail"] == ""
        assert "secret_role" not in json.dumps(received[0])
    finally:
        server.shutdown()
        server.server_close()


def test_a_least_privilege_admin_samples_without_pg_monitor(least_privilege_instance, connected_role,  # noqa: F811
                                                           lock_table):
    # given an admin login that is neither superuser nor pg_monitor, and another role's open session
    body, _ = take_sample(least_privilege_instance)
    # then the other role's session counts, its state hidden (never counted as long or idle in transaction)
    theirs = [s for s in body["sessions"] if s["role"] == connected_role]
    assert len(theirs) == 1 and theirs[0]["state"] == "hidden" and theirs[0]["xact_seconds"] is None
    assert body["sessions_hidden"] >= 1 and body["connections"]["by_role"][connected_role] == 1
    # and sizes, xid ages and the tables of the managed databases are all there
    assert {d["name"] for d in body["databases"] if d["size_bytes"]} >= {"postgres", "app"}
    assert any(t["table"] == lock_table for t in body["tables"])
    assert body["metrics"]["max_xid_age"] > 0


def test_only_the_newest_sample_keeps_its_sessions_and_tables(managed_instance, lock_table):
    body, duration_ms = take_sample(managed_instance)
    first = sample_store(managed_instance, body, duration_ms=duration_ms, at=timezone.now() - timedelta(minutes=1))
    second = sample_store(managed_instance, body, duration_ms=duration_ms)
    first.refresh_from_db()
    second.refresh_from_db()
    assert {"sessions", "tables", "statements"} <= set(second.body)
    assert not {"sessions", "tables", "statements"} & set(first.body)
    assert first.body["metrics"] == body["metrics"] and first.body["databases"] == body["databases"]
    assert len(json.dumps(first.body)) < len(json.dumps(second.body))
