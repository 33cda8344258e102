"""The teams' own drill checks (issue #20): leads of the owning team write them, members read them,
other teams get nothing; hostile SQL is refused at input (a 400 naming `sql`) and, if it got in
anyway, fails at drill time as a read-only role of the team's that reads only its schemas."""

from __future__ import annotations

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from portal.choices import InstanceKind, MembershipRole, Persona
from portal.models import BackupPolicy, ManagedSchema, Team, TeamCheck
from portal.services.backups import backup_policy_set, backup_run, drill_request, drill_run
from portal.services.demo import membership_add
from portal.services.team_checks import team_check_create
from provisioning.backups.team_checks import role_for

pytestmark = pytest.mark.django_db


def _sql(cluster, statement: str) -> list | None:
    with psycopg.connect(cluster.socket_conninfo("app"), autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else None


@pytest.fixture
def payments_schema(people, backup_instance, backup_cluster):
    """payments owns schema `pay` of the backup cluster's database app (orders: 3 rows); a table
    outside it (public.secrets) that no team's check may read."""
    _sql(backup_cluster, "DROP SCHEMA IF EXISTS pay CASCADE")
    _sql(backup_cluster, "CREATE SCHEMA pay")
    _sql(backup_cluster, "CREATE TABLE pay.orders (id int PRIMARY KEY, state text NOT NULL)")
    _sql(backup_cluster, "INSERT INTO pay.orders VALUES (1, 'paid'), (2, 'paid'), (3, 'open')")
    _sql(backup_cluster, "DROP TABLE IF EXISTS public.secrets")
    _sql(backup_cluster, "CREATE TABLE public.secrets (v text)")
    _sql(backup_cluster, "INSERT INTO public.secrets VALUES ('hunter2')")
    payments = Team.objects.get(name="payments")
    ManagedSchema.objects.create(instance=backup_instance, database="app", name="pay", owner_role="pay_owner",
                                 team=payments)
    return payments


def _url(instance, check=None) -> str:
    return f"/api/v1/instances/{instance.pk}/team-checks/" + (f"{check}/" if check else "")


def test_a_lead_defines_checks_members_read_them_and_other_teams_get_nothing(people, api_for, backup_instance,
                                                                             payments_schema):
    erin = type(people["alice"]).objects.create_user("erin", password="x")
    erin.groups.add(Group.objects.get(name=Persona.REQUESTERS))
    membership_add(user=erin, team=payments_schema, role=MembershipRole.MEMBER)
    people["erin"] = erin
    # given alice, a lead of payments: she adds a check; what is stored is the normalised query
    created = api_for("alice").post(_url(backup_instance), {
        "team": "payments", "database": "app", "name": "paid-orders",
        "sql": "select count(*) from pay.orders where state = 'paid'", "expect": "equals", "expected": "2"},
        format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["sql"] == "SELECT pg_catalog.count(*) FROM pay.orders WHERE state = 'paid'"
    event = AuditEvent.objects.get(action="backup.team_check_created", object_id=str(body["id"]))
    assert event.outcome == "created" and event.actor == "alice" and event.details["team"] == "payments"

    # then erin (a member) reads it but may not change or delete it
    assert [c["name"] for c in api_for("erin").get(_url(backup_instance)).json()["results"]] == ["paid-orders"]
    assert api_for("erin").put(_url(backup_instance, body["id"]), {"expect": "rows"}, format="json").status_code == 403
    assert api_for("erin").delete(_url(backup_instance, body["id"])).status_code == 403
    assert api_for("erin").post(_url(backup_instance), {"team": "payments", "database": "app", "name": "x",
                                                        "sql": "SELECT 1"}, format="json").status_code == 403
    # and dave (the lead of another team) sees nothing of it and is refused
    assert api_for("dave").get(_url(backup_instance)).json()["results"] == []
    assert api_for("dave").get(_url(backup_instance, body["id"])).status_code == 404
    assert api_for("dave").put(_url(backup_instance, body["id"]), {"expect": "rows"}, format="json").status_code == 404
    assert api_for("dave").delete(_url(backup_instance, body["id"])).status_code == 404
    refused = api_for("dave").post(_url(backup_instance), {"team": "payments", "database": "app", "name": "mine",
                                                           "sql": "SELECT 1 FROM pay.orders"}, format="json")
    assert refused.status_code == 403 and "team" in refused.json()["errors"]
    # a team without schemas in the database cannot place a check there (dave's analytics)
    none_owned = api_for("dave").post(_url(backup_instance), {"team": "analytics", "database": "app", "name": "x",
                                                              "sql": "SELECT 1"}, format="json")
    assert none_owned.status_code == 400 and list(none_owned.json()["errors"]) == ["database"]

    # when alice changes it, before and after are audited; the admin may change it too; bob reads all
    changed = api_for("alice").put(_url(backup_instance, body["id"]), {"expect": "rows"}, format="json")
    assert changed.status_code == 200 and changed.json()["expected"] == ""
    event = AuditEvent.objects.get(action="backup.team_check_changed", object_id=str(body["id"]))
    assert event.outcome == "changed" and event.details["before"]["expect"] == "equals"
    assert api_for("admin").put(_url(backup_instance, body["id"]), {"name": "orders"}, format="json").status_code == 200
    assert [c["name"] for c in api_for("bob").get(_url(backup_instance)).json()["results"]] == ["orders"]
    # and deleted, audited
    assert api_for("alice").delete(_url(backup_instance, body["id"])).status_code == 204
    assert AuditEvent.objects.get(action="backup.team_check_deleted", object_id=str(body["id"])).outcome == "deleted"
    assert not TeamCheck.objects.exists()
    # the rest of the policy stays the admins'
    assert api_for("alice").put(f"/api/v1/instances/{backup_instance.pk}/backup-policy/", {"enabled": False},
                                format="json").status_code == 403


HOSTILE = [
    "SELECT 1 FROM pay.orders; DELETE FROM pay.orders",
    "DELETE FROM pay.orders",
    "WITH gone AS (DELETE FROM pay.orders RETURNING *) SELECT count(*) FROM gone",
    "SELECT * INTO pay.copy FROM pay.orders",
    "SELECT * FROM pay.orders FOR UPDATE",
    "SELECT pg_read_file('PG_VERSION')",
    "SELECT set_config('role', 'postgres', true)",
    "SELECT pg_catalog.pg_sleep(60)",
    "SELECT nextval('pay.orders_seq')",
    "SELECT query_to_xml('DELETE FROM pay.orders', true, true, '')",
    "SELECT * FROM public.secrets",
    "SELECT * FROM secrets",
    "SELECT pay.evil()",
    "SELECT 1 OPERATOR(pay.===) 1",
    "COPY pay.orders TO '/tmp/x'",
    "SELECT $1",
    # a bare name outside its CTE's scope would resolve to the catalogs (search_path = pg_catalog)
    "SELECT * FROM (WITH pg_authid AS (SELECT 1) SELECT 1) s, pg_authid",
    "WITH a AS (SELECT * FROM pg_roles), pg_roles AS (SELECT 1) SELECT * FROM a",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_sql_is_a_400_naming_sql_and_stores_nothing(people, api_for, backup_instance, payments_schema, sql):
    response = api_for("alice").post(_url(backup_instance), {"team": "payments", "database": "app", "name": "evil",
                                                             "sql": sql}, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["sql"]
    assert not TeamCheck.objects.exists()
    assert not AuditEvent.objects.filter(action="backup.team_check_created").exists()


def test_team_checks_run_in_the_drill_and_a_failing_one_fails_it(people, api_for, backup_instance, backup_cluster,
                                                                 payments_schema):
    admin = people["admin"]
    backup_policy_set(instance=backup_instance, actor=admin, enabled=True, method="physical")
    for name, sql, expect, expected in (
            ("has-orders", "SELECT id FROM pay.orders", "rows", ""),
            ("two-paid", "SELECT count(*) FROM pay.orders WHERE state = 'paid'", "equals", "2"),
            ("no-refunds", "SELECT id FROM pay.orders WHERE state = 'refunded'", "no_rows", ""),
            ("none-open", "SELECT id FROM pay.orders WHERE state = 'open'", "no_rows", "")):  # 1 open: fails
        response = api_for("alice").post(_url(backup_instance), {"team": "payments", "database": "app", "name": name,
                                                                 "sql": sql, "expect": expect, "expected": expected},
                                         format="json")
        assert response.status_code == 201, response.content
    payments = payments_schema
    # Rows that got past the input check (written straight to the table: an older rule, a restored
    # portal database): the drill's role refuses them anyway.
    for name, sql in (("writes", "WITH w AS (INSERT INTO pay.orders VALUES (99, 'x') RETURNING 1) SELECT * FROM w"),
                      ("reads-outside", "SELECT v FROM public.secrets"),
                      ("reads-files", "SELECT pg_catalog.pg_read_file('PG_VERSION')"),
                      ("role-escape", "SELECT pg_catalog.set_config('role', 'postgres', false)")):
        TeamCheck.objects.create(instance=backup_instance, team=payments, database="app", name=name, sql=sql,
                                 expect="rows")
    assert backup_run(backup_instance.pk) == "ok"

    # when a drill runs
    drill = drill_request(instance=backup_instance, actor=admin)
    assert drill_run(drill.pk) == "failed"
    drill.refresh_from_db()
    checks = {c["name"]: c for c in drill.checks}

    # then the built-in checks passed, the team's good checks passed with their duration recorded
    assert checks["restore"]["ok"] and checks["row_counts"]["ok"], drill.checks
    for name in ("has-orders", "two-paid", "no-refunds"):
        entry = checks[f"team:payments:{name}"]
        assert entry["ok"], entry
        assert entry["team"] == "payments" and entry["duration_ms"] is not None
    assert checks["team:payments:two-paid"]["detail"] == "first value '2', expected '2'"
    # the failing one failed the drill, naming why and never the rows
    assert not checks["team:payments:none-open"]["ok"]
    assert checks["team:payments:none-open"]["detail"] == "a row came back (expected none)"
    # the hostile ones failed without doing anything
    assert not checks["team:payments:writes"]["ok"] and "read-only" in checks["team:payments:writes"]["detail"]
    outside = checks["team:payments:reads-outside"]
    assert not outside["ok"] and "permission denied" in outside["detail"] and "hunter2" not in str(drill.checks)
    assert not checks["team:payments:reads-files"]["ok"]
    assert "permission denied" in checks["team:payments:reads-files"]["detail"]
    assert not checks["team:payments:role-escape"]["ok"]
    event = AuditEvent.objects.get(action="backup.drill_failed", object_id=str(drill.pk))
    assert event.outcome == "failed"
    assert "team:payments:none-open" in event.details["failed_checks"]
    assert "team:payments:has-orders" not in event.details["failed_checks"]
    # a failed drill alerts as always: the policy's health is red
    assert BackupPolicy.objects.get(instance=backup_instance).health == "failed"
    # nothing changed on the source either; the scratch cluster is gone with its role
    assert _sql(backup_cluster, "SELECT count(*) FROM pay.orders") == [(3,)]
    assert _sql(backup_cluster, f"SELECT 1 FROM pg_roles WHERE rolname = '{role_for(payments.pk)}'") == []

    # the team's members see the result on their checks (API and page), not the drill list
    listed = {c["name"]: c for c in api_for("alice").get(_url(backup_instance)).json()["results"]}
    assert listed["none-open"]["last_result"]["ok"] is False and listed["has-orders"]["last_result"]["ok"]

    # when the failing and the hostile checks are removed, the next drill passes
    TeamCheck.objects.exclude(name__in=["has-orders", "two-paid", "no-refunds"]).delete()
    drill = drill_request(instance=backup_instance, actor=admin)
    result = drill_run(drill.pk)
    drill.refresh_from_db()
    assert result == "passed", drill.checks
    assert sum(c["name"].startswith("team:payments:") for c in drill.checks) == 3


def test_a_logical_drill_runs_the_team_checks_too(people, backup_instance, backup_cluster, payments_schema):
    # given the cluster as an external instance (logical backups) and two checks of payments
    backup_instance.kind = InstanceKind.EXTERNAL
    backup_instance.save()
    BackupPolicy.objects.create(instance=backup_instance, method="logical")
    for name, sql, expect, expected in (("open-orders", "SELECT id FROM pay.orders WHERE state = 'open'", "rows", ""),
                                        ("all-paid", "SELECT bool_and(state = 'paid') FROM pay.orders", "equals",
                                         "false")):
        team_check_create(actor=people["alice"], instance=backup_instance, team=payments_schema, database="app",
                          name=name, sql=sql, expect=expect, expected=expected)
    assert backup_run(backup_instance.pk) == "ok"
    # when it is drilled, then both team checks ran on the restored dumps and passed
    drill = drill_request(instance=backup_instance, actor=people["admin"])
    result = drill_run(drill.pk)
    drill.refresh_from_db()
    assert result == "passed", drill.checks
    checks = {c["name"]: c for c in drill.checks}
    assert checks["team:payments:open-orders"]["ok"] and checks["team:payments:all-paid"]["ok"]
    assert checks["team:payments:all-paid"]["detail"] == "first value 'false', expected 'false'"


def test_the_drill_checks_page_lets_leads_edit_and_names_a_bad_field(people, web_for, backup_instance,
                                                                    payments_schema):
    url = f"/instances/{backup_instance.pk}/drill-checks/"
    alice = web_for("alice")
    page = alice.post(url, {"action": "create", "team": "payments", "database": "app", "name": "orders",
                            "sql": "SELECT 1 FROM pay.orders", "expect": "rows"}, follow=True)
    assert page.status_code == 200 and TeamCheck.objects.filter(name="orders").exists()
    page = alice.post(url, {"action": "create", "team": "payments", "database": "app", "name": "evil",
                            "sql": "DELETE FROM pay.orders", "expect": "rows"}, follow=True).content.decode()
    assert "sql: only a plain SELECT" in page and not TeamCheck.objects.filter(name="evil").exists()
    assert "team-check-form" in page and "orders" in page
    # dave sees the page without payments' checks and may not add one for payments
    dave = web_for("dave")
    assert "SELECT 1 FROM pay.orders" not in dave.get(url).content.decode()
    assert dave.post(url, {"action": "create", "team": "payments", "database": "app", "name": "x",
                           "sql": "SELECT 1 FROM pay.orders", "expect": "rows"}).status_code == 403


def test_the_check_list_and_page_do_not_grow_in_queries_with_the_checks(people, api_for, web_for, backup_instance,
                                                                        payments_schema,
                                                                        django_assert_max_num_queries):
    def add(first: int, count: int) -> None:
        TeamCheck.objects.bulk_create(
            TeamCheck(instance=backup_instance, team=payments_schema, database="app", name=f"c{i}",
                      sql="SELECT 1 FROM pay.orders", created_by=people["alice"]) for i in range(first, first + count))

    add(0, 1)
    api, page = _url(backup_instance), f"/instances/{backup_instance.pk}/drill-checks/"
    counts = {}
    for who in ("alice", "admin"):
        client = api_for(who)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(api).status_code == 200
        counts[("api", who)] = len(captured)
        with CaptureQueriesContext(connection) as captured:
            assert web_for(who).get(page).status_code == 200
        counts[("page", who)] = len(captured)
    add(1, 14)
    for (kind, who), count in counts.items():
        client = api_for(who) if kind == "api" else web_for(who)
        with django_assert_max_num_queries(count):
            response = client.get(api if kind == "api" else page)
        if kind == "api":
            assert len(response.json()["results"]) == 15
        else:
            assert response.content.decode().count('<tr id="team-check-') == 15
