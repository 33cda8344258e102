"""Requester SQL cannot become anyone else (#14, items 1-3; docs/security.md).

The outside security test escaped a DDL request's `SET LOCAL ROLE <owner>` with
`set_config('role', session_user, true)` inside a query string run by `ts_rewrite(tsquery, text)`,
and the plan's later statements ran as the instance's admin login; the dry run did it at submit
and printed computed values back. Each attack is here, on a real cluster, with the engine that
applies approved plans:

- the attack classes are refused at submit by the function allow-list (400 naming the function);
- and, the design-level fix, even SQL that reached the cluster runs over the team's executor
  login, a session that cannot become the admin, a superuser or another team;
- dry runs and failed applies hand back the condition and position, never computed values;
- a same-named function planted in the team's schema (a SECURITY DEFINER detour) never runs.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import RequestStatus
from portal.errors import InvalidPayload
from portal.models import ChangeRequest, ManagedSchema, Team
from portal.services.requests import request_approve, request_submit
from provisioning import connections, engine, executor_logins
from provisioning.ddl import functions
from provisioning.errors import PermanentTargetError
from provisioning.models import ExecutorLogin
from tests.portal.requests_helpers import apply_for_test, unique

pytestmark = pytest.mark.slow

ESCAPE = "set_config('role', session_user, true)"
QUERY_STRING_ESCAPE = ("ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery "
                       "WHERE " + ESCAPE.replace("'", "''") + " IS NOT NULL')")


@pytest.fixture
def team_schema(transactional_db, people, managed_instance):
    """payments owns a schema applied for real (its owner role is the one DDL runs as)."""
    payments = Team.objects.get(name="payments")
    request = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                             team=payments, justification="set up", payload={"database": "app", "name": unique("sec")})
    apply_for_test(request)
    return payments, request.payload["name"], request.payload["owner_role"]


def submit_ddl(people, instance, team, schema: str, text: str) -> ChangeRequest:
    return request_submit(user=people["alice"], actor_ip="127.0.0.1", type="ddl", instance=instance, team=team,
                          justification="security test", payload={"database": "app", "schema": schema, "sql": text},
                          dry_run_override="security test: failing plans are submitted on purpose")


def approve_and_apply(people, request: ChangeRequest) -> ChangeRequest:
    """bob approves (unless the policy already did) and the engine applies it, as a worker would."""
    request.refresh_from_db()
    if request.status == RequestStatus.SUBMITTED:
        request_approve(request=request, reviewer=people["bob"], comment="looks fine")
    engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="security-test")
    request.refresh_from_db()
    return request


def admin(instance, *statements: sql.Composable | str, database: str = "app") -> list:
    rows: list = []
    with connections.connect(instance, database, autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
    return rows


def as_executor_login(instance, team, owner: str):
    return executor_logins.connect(instance, team, "app", owner_role=owner, lock_timeout_ms=1000,
                                   statement_timeout_ms=5000, autocommit=True)


# --- refused at submit ---------------------------------------------------------------------------
ATTACKS = [
    # the outside test's finding: a query string run by ts_rewrite undoes the SET ROLE
    ("query string", f"CREATE TABLE t AS SELECT {QUERY_STRING_ESCAPE} AS q", "ts_rewrite"),
    ("DEFAULT", f"CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t ADD COLUMN c text DEFAULT {ESCAPE}",
     "set_config"),
    ("CHECK", f"CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t ADD CONSTRAINT c CHECK (length({ESCAPE}) > 0)",
     "set_config"),
    ("CTAS", "CREATE TABLE t AS SELECT pg_read_file('PG_VERSION') AS f", "pg_read_file"),
    ("materialized view", "CREATE MATERIALIZED VIEW m AS SELECT query_to_xml('SELECT 1', true, true, '') AS x",
     "query_to_xml"),
    ("index expression", "CREATE TABLE t (id int PRIMARY KEY, n text); CREATE INDEX i ON t (current_setting(n))",
     "current_setting"),
    ("partial index predicate",
     "CREATE TABLE t (id int PRIMARY KEY); CREATE INDEX i ON t (id) WHERE pg_sleep(1) IS NOT NULL", "pg_sleep"),
    ("generated column", "CREATE TABLE t (id int, g text GENERATED ALWAYS AS (dblink_exec('x')) STORED)",
     "dblink_exec"),
]


@pytest.mark.parametrize("where, text, function", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_classes_are_refused_at_submit_naming_the_function_and_its_position(
        team_schema, people, managed_instance, where, text, function):
    # given alice's team schema
    team, schema, _ = team_schema
    before = ChangeRequest.objects.count()
    # when she submits SQL that calls a function off the allow-list, in any expression position
    with pytest.raises(InvalidPayload) as refused:
        submit_ddl(people, managed_instance, team, schema, text)
    # then it is a 400 on payload.sql naming the function and where it is; nothing ran, nothing stored
    messages = " ".join(refused.value.errors["payload.sql"])
    assert f"function {function}()" in messages and "position" in messages and "[scope.function_call]" in messages
    assert ChangeRequest.objects.count() == before
    assert not AuditEvent.objects.filter(action="ddl.dry_run", details__plan__icontains=function).exists()


def test_the_api_answers_400_naming_the_function(team_schema, api_for):
    _, schema, _ = team_schema
    response = api_for("alice").post("/api/v1/requests/", {
        "type": "ddl", "instance": "demo", "team": "payments", "justification": "x",
        "payload": {"database": "app", "schema": schema, "sql": f"CREATE TABLE t AS SELECT {QUERY_STRING_ESCAPE}"}},
        format="json")
    assert response.status_code == 400
    assert "ts_rewrite()" in response.json()["errors"]["payload.sql"][0]


def test_the_allow_list_holds_no_function_that_runs_queries_reads_files_or_changes_the_session(managed_instance):
    # given every allow-listed name as PostgreSQL 16 knows it
    rows = admin(managed_instance, sql.SQL(
        "SELECT p.proname::text, bool_or(p.prosecdef), bool_or(p.provolatile = 'v')"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pg_catalog' AND p.proname = ANY({}) GROUP BY 1").format(
        sql.Literal(sorted(functions.ALLOWED))))
    # then each is a built-in of pg_catalog, none SECURITY DEFINER, and the only volatile ones are
    # the clock, random values and sequences (nothing that reads state beyond the statement)
    assert {name for name, _, _ in rows} == set(functions.ALLOWED)
    assert not any(definer for _, definer, _ in rows)
    assert {name for name, _, volatile in rows if volatile} == {
        "clock_timestamp", "random", "gen_random_uuid", "nextval", "currval", "setval"}
    # and the classes the security test used are refused whatever the list says
    for name in ("ts_rewrite", "set_config", "query_to_xml", "pg_read_file", "current_setting", "lo_import",
                 "dblink", "pg_terminate_backend", "system_user"):
        assert not functions.allowed(name), name


# --- the session itself cannot become anyone else --------------------------------------------------
def test_the_executor_login_is_unprivileged_and_reaches_only_the_teams_owner_roles(team_schema, managed_instance):
    # given the team's executor login, as the engine sets it up before a DDL request
    team, _, owner = team_schema
    login = executor_logins.ensure(managed_instance, team, "app", owner_role=owner)
    # then it is a NOINHERIT login without any dangerous attribute
    (flags,) = admin(managed_instance, sql.SQL(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit, rolcanlogin"
        " FROM pg_roles WHERE rolname = {}").format(sql.Literal(login.role)))
    assert flags == (False, False, False, False, False, False, True)
    # and it is a member of exactly the team's owner roles: no pg_* role, not the admin login
    members = admin(managed_instance, sql.SQL(
        "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = {}").format(sql.Literal(login.role)))
    expected = set(ManagedSchema.objects.filter(instance=managed_instance, team=team).values_list("owner_role",
                                                                                                    flat=True))
    assert {row[0] for row in members} == expected and owner in expected
    # and its password is stored encrypted, never in plain text
    row = ExecutorLogin.objects.get(pk=login.pk)
    assert login.password not in row.password_encrypted and row.password == login.password
    assert AuditEvent.objects.filter(action__in=["executor_login.created", "executor_login.changed"],
                                     object_id=login.role).exists()


def test_undoing_the_set_role_reaches_a_login_with_no_privilege_of_its_own(team_schema, managed_instance,
                                                                             managed_cluster):
    # given the executor login's session, SET to the team's owner as a DDL plan is
    team, schema, owner = team_schema
    other = f"{unique('other')}_owner"
    admin(managed_instance, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(other)))
    with as_executor_login(managed_instance, team, owner) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        # when requester SQL undoes it, through the query string the security test used
        conn.execute(sql.SQL("SELECT ts_rewrite('a'::tsquery, {})").format(sql.Literal(
            "SELECT 'a'::tsquery, 'b'::tsquery WHERE set_config('role', session_user, true) IS NOT NULL")))
        who = conn.execute("SELECT current_user::text, session_user::text, "
                           "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").fetchone()
        # then the session is the executor login itself, not the admin login, and no superuser
        assert who[0] == who[1] and who[0].startswith(executor_logins.ROLE_PREFIX) and who[2] is False
        # and nothing beyond the team's roles is reachable, whichever way it is tried
        attempts = [
            sql.SQL("SET ROLE {}").format(sql.Identifier(managed_instance.admin_user)),
            sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(managed_instance.admin_user)),
            sql.SQL("SELECT set_config('role', {}, true)").format(sql.Literal(managed_instance.admin_user)),
            sql.SQL("SET ROLE {}").format(sql.Identifier(other)),
            sql.SQL("SET ROLE pg_read_server_files"),
            sql.SQL("SELECT pg_read_file('PG_VERSION')"),
            sql.SQL("CREATE ROLE {} SUPERUSER").format(sql.Identifier(unique("evil"))),
            sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(who[0])),
            sql.SQL("CREATE TABLE {}.planted (id int)").format(sql.Identifier(schema)),
            sql.SQL("SELECT count(*) FROM pg_authid"),
        ]
        for attempt in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(attempt)
        # while the team's own owner role is still reachable (what the plan needs)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        assert conn.execute("SELECT current_user::text").fetchone()[0] == owner


def test_out_of_band_privileges_on_the_login_are_taken_back_before_the_next_ddl(team_schema, managed_instance):
    # given the login, to which a DBA later added a predefined role and an attribute
    team, _, owner = team_schema
    login = executor_logins.ensure(managed_instance, team, "app", owner_role=owner)
    role = sql.Identifier(login.role)
    admin(managed_instance, sql.SQL("GRANT pg_read_server_files TO {}").format(role),
          sql.SQL("ALTER ROLE {} CREATEDB INHERIT").format(role))
    # when the engine prepares the next DDL request
    executor_logins.ensure(managed_instance, team, "app", owner_role=owner)
    # then both are gone again, and the correction is audited
    (row,) = admin(managed_instance, sql.SQL(
        "SELECT rolcreatedb, rolinherit, pg_has_role(oid, 'pg_read_server_files', 'MEMBER') FROM pg_roles"
        " WHERE rolname = {}").format(sql.Literal(login.role)))
    assert row == (False, False, False)
    event = AuditEvent.objects.filter(action="executor_login.changed", object_id=login.role).latest("seq")
    assert event.details["revoked"] == ["pg_read_server_files"] and event.details["attributes_reset"] is True


def test_an_owner_role_that_can_reach_a_privileged_role_is_never_granted(team_schema, managed_instance):
    # given the team's owner role, made a member of a predefined role outside the portal
    team, _, owner = team_schema
    admin(managed_instance, sql.SQL("GRANT pg_read_server_files TO {}").format(sql.Identifier(owner)))
    try:
        # when a DDL request would run as it, then it stops before any SQL runs, naming why
        with pytest.raises(PermanentTargetError, match="pg_read_server_files"):
            executor_logins.ensure(managed_instance, team, "app", owner_role=owner)
        login = ExecutorLogin.objects.get(instance=managed_instance, team=team)
        reach = admin(managed_instance, sql.SQL(
            "SELECT pg_has_role(oid, {}, 'MEMBER') FROM pg_roles WHERE rolname = {}").format(
            sql.Literal(owner), sql.Literal(login.role)))
        assert reach in ([], [(False,)])
    finally:
        admin(managed_instance, sql.SQL("REVOKE pg_read_server_files FROM {}").format(sql.Identifier(owner)))


# --- end to end through the engine -----------------------------------------------------------------
def test_an_approved_ddl_runs_as_the_owner_over_the_executor_login(team_schema, people, managed_instance):
    # given alice's DDL recording who ran it
    team, schema, owner = team_schema
    request = submit_ddl(people, managed_instance, team, schema,
                         "CREATE TABLE who AS SELECT session_user::text AS s, current_user::text AS c, "
                         "lower('X') AS l")
    assert request.dry_run["ok"] is True, request.dry_run
    # when bob approves and the engine applies it
    request = approve_and_apply(people, request)
    assert request.status == RequestStatus.APPLIED, request.status_detail
    # then the statements ran as the owner role in a session of the executor login, not the admin's
    login = ExecutorLogin.objects.get(instance=managed_instance, team=team)
    rows = admin(managed_instance, sql.SQL("SELECT s, c, l, (SELECT tableowner::text FROM pg_tables WHERE "
                                           "schemaname = {} AND tablename = 'who') FROM {}.who").format(
        sql.Literal(schema), sql.Identifier(schema)))
    assert rows == [(login.role, owner, "x", owner)]
    # and the plan's one marker was written by that login in the same transaction
    marker = admin(managed_instance, sql.SQL("SELECT count(*) FROM dbportal_meta.applied_change WHERE request_id = {}"
                                             ).format(sql.Literal(request.pk)))
    assert marker == [(1,)]
    # and every call was pinned to the built-in in the plan the reviewer approved
    assert "pg_catalog.lower('X')" in " ".join(request.plan)


def test_a_failing_statement_hands_back_no_computed_value_in_the_dry_run_or_the_apply(
        team_schema, people, managed_instance):
    # given DDL whose failure message would print a value computed at run time (the login's name)
    team, schema, _ = team_schema
    request = submit_ddl(people, managed_instance, team, schema,
                         "CREATE TABLE leak AS SELECT CAST(session_user AS integer) AS x")
    login = ExecutorLogin.objects.get(instance=managed_instance, team=team).role
    # then the dry run says which statement failed, with its SQLSTATE, and nothing else
    dry = request.dry_run
    assert dry["ok"] is False and dry["statement_index"] == 1 and dry["sqlstate"] == "22P02"
    assert dry["error"].startswith("invalid_text_representation (SQLSTATE 22P02)")
    assert login not in str(dry) and "invalid input syntax" not in str(dry)
    # and the dry run is audited with its SQL and outcome, without the value either
    event = AuditEvent.objects.get(action="ddl.dry_run", request_id=request.pk)
    assert event.outcome == "failure" and event.details["sqlstate"] == "22P02"
    assert any("session_user" in line.lower() and "integer" in line for line in event.details["plan"])
    assert login not in str(event.details)
    # when it is approved anyway and applied, the failure keeps no value either
    request = approve_and_apply(people, request)
    assert request.status == RequestStatus.FAILED
    assert "22P02" in request.status_detail and login not in request.status_detail
    statements = request.executions.get().statements
    assert login not in str(statements)


def test_a_security_definer_detour_in_the_teams_schema_never_runs(team_schema, people, managed_instance):
    # given a SECURITY DEFINER function owned by the admin in the team's schema, named like a
    # built-in and matching an integer argument better than pg_catalog.lower(text) would
    team, schema, _ = team_schema
    ident = sql.Identifier(schema)
    admin(managed_instance,
          sql.SQL("CREATE TABLE public.detour_log (who text)"),
          sql.SQL("CREATE FUNCTION {}.lower(integer) RETURNS text SECURITY DEFINER LANGUAGE sql AS "
                  "$$ INSERT INTO public.detour_log VALUES (current_user) RETURNING who $$").format(ident),
          sql.SQL("CREATE FUNCTION {}.detour() RETURNS text SECURITY DEFINER LANGUAGE sql AS "
                  "$$ INSERT INTO public.detour_log VALUES (current_user) RETURNING who $$").format(ident))
    try:
        # when alice calls it by its own name: refused at submit
        with pytest.raises(InvalidPayload, match=r"function detour\(\)"):
            submit_ddl(people, managed_instance, team, schema, "CREATE TABLE d AS SELECT detour() AS x")
        # and when she calls it through the built-in's name, the plan pins pg_catalog.lower
        request = submit_ddl(people, managed_instance, team, schema, "CREATE TABLE d AS SELECT lower(42) AS x")
        assert any("pg_catalog.lower(42)" in line for line in request.plan)
        # then the dry run finds no such built-in, and the detour never ran
        assert request.dry_run["ok"] is False and request.dry_run["sqlstate"] == "42883"
        assert admin(managed_instance, "SELECT count(*) FROM public.detour_log") == [(0,)]
    finally:
        admin(managed_instance, "DROP TABLE public.detour_log",
              sql.SQL("DROP FUNCTION {}.lower(integer), {}.detour()").format(ident, ident))


def test_rotation_replaces_the_password_on_the_cluster_and_is_audited(team_schema, managed_instance):
    # given the team's login and its current password
    team, _, owner = team_schema
    login = executor_logins.ensure(managed_instance, team, "app", owner_role=owner)
    old = login.password
    # when the portal rotates it
    executor_logins.rotate(login)
    login.refresh_from_db()
    # then the old password no longer logs in, the new one does, and the rotation is audited
    params = connections.conninfo(host=managed_instance.host, port=managed_instance.port, dbname="app",
                                  user=login.role, password=old)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**params).close()
    assert login.password != old and login.synced_at is not None
    with as_executor_login(managed_instance, team, owner) as conn:
        assert conn.execute("SELECT session_user::text").fetchone()[0] == login.role
    assert AuditEvent.objects.filter(action="executor_login.rotated", object_id=login.role, outcome="success").exists()


def test_the_command_rotates_a_teams_login_and_key_rotation_re_encrypts_it(team_schema, managed_instance,
                                                                            settings):
    # given the team's login
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    team, _, owner = team_schema
    login = executor_logins.ensure(managed_instance, team, "app", owner_role=owner)
    before = login.password
    # when an operator rotates it by command
    call_command("executor_logins", "--rotate", "--instance", managed_instance.name, "--team", team.name)
    login.refresh_from_db()
    # then it has a new password that logs in
    assert login.password != before
    with as_executor_login(managed_instance, team, owner) as conn:
        assert conn.execute("SELECT session_user::text").fetchone()[0] == login.role
    # and when a new Fernet key is put first, key rotation re-encrypts the stored password with it
    new_key = Fernet.generate_key().decode()
    settings.FERNET_KEYS = [new_key, *settings.FERNET_KEYS]
    call_command("rotate_fernet_keys")
    login.refresh_from_db()
    assert Fernet(new_key.encode()).decrypt(login.password_encrypted.encode()).decode() == login.password


def test_the_review_rules_page_shows_the_function_allow_list_and_its_version(web_for, team_schema):
    page = web_for("admin").get("/review-rules/").content.decode()
    assert functions.ALLOWLIST_VERSION in page and "gen_random_uuid" in page
    assert "ts_rewrite" not in page and "set_config" not in page
