"""Last seen connected: beat samples pg_stat_activity on every instance (one task each) and keeps
the last time each role had a session; a down instance costs only its own task."""

from __future__ import annotations

import secrets
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from portal.celery import app
from portal.choices import Environment, InstanceKind, InstanceStatus
from portal.errors import TargetUnavailable
from portal.models import Instance
from portal.selectors.activity import last_seen, last_seen_for_instance, last_seen_many
from provisioning.activity import record_seen, sample_instance
from provisioning.admin_login import setup_statements
from provisioning.clusters import free_port
from provisioning.models import RoleLastSeen
from tests.fixtures.celery import wait_until
from tests.provisioning.helpers import admin_conn, unique

pytestmark = pytest.mark.slow


@pytest.fixture
def connected_role(managed_cluster):
    """A login role made on the cluster by hand, with an open session to `app` while the test runs."""
    role, password = unique("seen"), secrets.token_urlsafe(16)
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    session = psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=role,
                              password=password, passfile="/dev/null", autocommit=True)
    yield role
    session.close()
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def least_privilege_instance(db, managed_cluster):
    """The managed cluster registered with a least-privilege admin login (README's setup SQL)."""
    admin, password = unique("lpadmin"), secrets.token_urlsafe(18)
    with admin_conn(managed_cluster, "postgres") as conn:
        for statement in setup_statements(admin, password=password, databases=["postgres", "app"]):
            conn.execute(statement)
    instance = Instance(name=unique("lp").replace("_", "-"), environment=Environment.DEV,
                        kind=InstanceKind.EXTERNAL, host="127.0.0.1", port=managed_cluster.port,
                        database="postgres", admin_user=admin, status=InstanceStatus.REACHABLE)
    instance.admin_password = password
    instance.save()
    yield instance
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(admin)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


def test_a_least_privilege_admin_sees_another_roles_session(least_privilege_instance, connected_role):
    # given a role connected to `app`, and an instance whose admin is neither superuser nor pg_monitor
    before = timezone.now()
    # when the instance is sampled
    seen = sample_instance(least_privilege_instance)
    # then the role is recorded, with its database and session count, after the sample began
    assert seen >= 1
    row = RoleLastSeen.objects.get(instance=least_privilege_instance, role=connected_role)
    assert row.database == "app" and row.sessions == 1 and row.last_seen_at >= before
    assert last_seen(least_privilege_instance, connected_role) == row.last_seen_at
    # and the sampling session itself is not counted as a session of the admin
    assert not RoleLastSeen.objects.filter(instance=least_privilege_instance,
                                           role=least_privilege_instance.admin_user).exists()


def test_a_late_sample_never_moves_last_seen_back(managed_instance):
    now = timezone.now()
    record_seen(managed_instance, [("r1", "app", 2)], at=now)
    record_seen(managed_instance, [("r1", "other", 5), ("r2", "app", 1)], at=now - timedelta(minutes=5))
    assert last_seen(managed_instance, "r1") == now
    assert RoleLastSeen.objects.get(instance=managed_instance, role="r1").database == "app"
    assert last_seen_many([(managed_instance, "r1"), (managed_instance.pk, "r2"), (managed_instance, "never")]) == {
        (managed_instance.pk, "r1"): now, (managed_instance.pk, "r2"): now - timedelta(minutes=5)}
    assert set(last_seen_for_instance(managed_instance)) == {"r1", "r2"}
    assert last_seen(managed_instance, "never") is None


def test_an_unreachable_instance_is_an_error_and_records_nothing(db):
    down = Instance(name="down", environment=Environment.DEV, kind=InstanceKind.EXTERNAL, host="127.0.0.1",
                    port=free_port(), database="postgres", admin_user="postgres", status=InstanceStatus.REACHABLE)
    down.admin_password = "x"
    down.save()
    with pytest.raises(TargetUnavailable, match="connection refused"):
        sample_instance(down)
    assert not RoleLastSeen.objects.filter(instance=down).exists()


def test_the_beat_job_samples_each_instance_in_its_own_task_and_a_down_one_does_not_stop_the_others(
    transactional_db, managed_instance, connected_role, celery_worker
):
    # given a reachable instance and one that is down, registered first
    down = Instance(name="aaa-down", environment=Environment.DEV, kind=InstanceKind.EXTERNAL, host="127.0.0.1",
                    port=free_port(), database="postgres", admin_user="postgres", status=InstanceStatus.REACHABLE)
    down.admin_password = "x"
    down.save()
    # when the beat job runs on the real worker
    app.send_task("provisioning.sample_activity")
    # then the connected role is recorded on the reachable instance
    wait_until(lambda: last_seen(managed_instance, connected_role), timeout=60,
               message="the connected role to be recorded")
    # and the down instance is logged as a failed sample of its own task, nothing recorded
    wait_until(lambda: "activity.sample_failed" in celery_worker.log_text(), timeout=30,
               message="the down instance's sample to fail")
    assert "provisioning.sample_instance_activity" in celery_worker.log_text()
    assert not RoleLastSeen.objects.filter(instance=down).exists()
