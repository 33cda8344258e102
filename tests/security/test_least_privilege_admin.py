"""An instance whose admin login is not a superuser (issue 14, item 4).

The admin login is created exactly as README.md documents it (provisioning.admin_login's
setup statements: CREATEROLE, INHERIT, pg_signal_backend, CONNECT and CREATE on its databases)
on the embedded PostgreSQL 16 and, where present, the machine's PostgreSQL 15, registered
through the API, and then every request type and job runs through a real Celery worker:
schema, role, grant, DDL, drift, entitlements, grant expiry (a system revoke that ends the
role's open session) and a revoke.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from portal.choices import RequestStatus
from portal.models import ChangeRequest, Grant, Instance, Team
from portal.selectors.entitlements import entitlements_for
from portal.services.requests import request_approve, request_submit
from provisioning.admin_login import setup_statements
from provisioning.drift import drift_scan
from provisioning.expiry import expire_grants
from provisioning.inventory import inventory_refresh
from provisioning.models import DriftFinding
from provisioning.secrets import secret_reveal
from tests.fixtures.clusters import EXTERNAL_PG
from tests.provisioning.helpers import approved_request

pytestmark = pytest.mark.slow


@dataclass
class Target:
    """A cluster with a least-privilege admin login made for this test, and what to clean up."""

    version: str
    host: str
    port: int
    maintenance: str  # the instance's maintenance database
    app: str  # where the team's schema goes
    superuser: dict  # psycopg.connect() keywords of a superuser session (for setup and checks)
    admin: str
    admin_password: str
    tag: str
    login_password: dict[str, str] = field(default_factory=dict)  # role -> password, for TCP logins

    def su(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(**{**self.superuser, "dbname": dbname or self.app}, autocommit=True)

    def name(self, what: str) -> str:
        return f"{self.tag}_{what}"


def _create_admin(target: Target, databases: list[str]) -> None:
    with target.su(target.maintenance) as conn:
        for statement in setup_statements(target.admin, password=target.admin_password, databases=databases):
            conn.execute(statement)


@pytest.fixture(params=["pg16", "pg15"])
def target(request, managed_cluster) -> Iterator[Target]:
    tag = f"lp{secrets.token_hex(3)}"
    database = f"{tag}_db"
    if request.param == "pg16":
        found = Target("16", "127.0.0.1", managed_cluster.port, database, database,
                       {"conninfo": managed_cluster.socket_conninfo()}, admin=f"{tag}_admin",
                       admin_password=secrets.token_urlsafe(18), tag=tag)
    else:
        external = request.getfixturevalue("external_pg")
        found = Target("15", external["host"], external["port"], database, database,
                       {k: v for k, v in EXTERNAL_PG.items() if k != "dbname"}, admin=f"{tag}_admin",
                       admin_password=secrets.token_urlsafe(18), tag=tag)
    with found.su("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    # The clusters are shared (the session's managed cluster, the machine's PostgreSQL 15): the
    # instance's maintenance database is the test's own, so the portal's marker table never lands
    # in a database someone else uses, and none made earlier by a superuser admin is in the way.
    _create_admin(found, [database])
    yield found
    with found.su("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    _drop_roles(found, ["postgres"])


def _drop_roles(target: Target, databases: list[str]) -> None:
    """Every role this test made (its names start with the tag), with what they own or hold."""
    with target.su("postgres") as conn:
        roles = [r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
                                            [f"{target.tag}\\_%"]).fetchall()]
    if not roles:
        return
    idents = sql.SQL(", ").join(sql.Identifier(r) for r in roles)
    for database in databases:
        with contextlib.suppress(psycopg.Error), target.su(database) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(idents))
    with target.su("postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(idents))


def _register(api_for, target: Target, name: str, **overrides) -> object:
    body = {"name": name, "environment": "dev", "host": target.host, "port": target.port,
            "database": target.maintenance, "admin_user": target.admin, "admin_password": target.admin_password}
    body.update(overrides)
    return api_for("admin").post("/api/v1/instances/", body, format="json")


def _applied(wait_for_status, request: ChangeRequest) -> ChangeRequest:
    done = wait_for_status(request.pk, {"applied", "failed"})
    assert done.status == RequestStatus.APPLIED, done.status_detail
    return done


def _login(target: Target, role: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host=target.host, port=target.port, dbname=target.app, user=role, password=password,
                           passfile="/dev/null", autocommit=True, connect_timeout=5)


def test_registration_names_each_privilege_a_non_superuser_admin_lacks(target, people, api_for):
    # given a login with CREATEROLE only: no pg_signal_backend, no INHERIT, no CREATE on the database
    weak = target.name("weak")
    with target.su(target.maintenance) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE NOINHERIT PASSWORD {}").format(
            sql.Identifier(weak), sql.Literal("weak-password-1")))
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(target.maintenance)))
    # when an admin registers the instance with it
    response = _register(api_for, target, f"{target.tag}-weak", admin_user=weak, admin_password="weak-password-1")
    # then it is a 400 on admin_user naming every missing privilege and the SQL that grants it
    assert response.status_code == 400, response.json()
    messages = response.json()["errors"]["admin_user"]
    assert len(messages) == 3, messages
    assert any("INHERIT" in m for m in messages)
    assert any(f"GRANT pg_signal_backend TO \"{weak}\"" in m for m in messages)
    assert any(f'GRANT CREATE ON DATABASE "{target.maintenance}"' in m for m in messages)
    assert not Instance.objects.filter(name=f"{target.tag}-weak").exists()
    # and the documented login (README: provisioning.admin_login.setup_statements) is accepted
    response = _register(api_for, target, f"{target.tag}-ok")
    assert response.status_code == 201, response.json()
    assert response.json()["server_version"].startswith(target.version)


def test_a_marker_table_left_by_an_earlier_admin_is_named_at_registration_until_handed_over(
        target, people, api_for):
    # given a database where an earlier (superuser) admin already keeps the portal's markers
    from provisioning.markers import MARKER_DDL

    with target.su(target.maintenance) as conn:
        for statement in MARKER_DDL:
            conn.execute(statement)
    # when the least-privilege login is registered, then the 400 says how to hand the table over
    response = _register(api_for, target, f"{target.tag}-markers")
    assert response.status_code == 400, response.json()
    (message,) = response.json()["errors"]["admin_user"]
    assert "ALTER TABLE dbportal_meta.applied_change OWNER TO" in message and target.admin in message
    # and once a superuser did, the login is accepted
    with target.su(target.maintenance) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA dbportal_meta OWNER TO {}").format(sql.Identifier(target.admin)))
        conn.execute(sql.SQL("ALTER TABLE dbportal_meta.applied_change OWNER TO {}").format(
            sql.Identifier(target.admin)))
    assert _register(api_for, target, f"{target.tag}-markers").status_code == 201


def test_a_non_superuser_admin_applies_every_request_type_and_runs_every_job(
    target, transactional_db, people, api_for, celery_worker, wait_for_status
):
    # given an instance registered with the documented least-privilege admin login
    response = _register(api_for, target, f"{target.tag}-lp")
    assert response.status_code == 201, response.json()
    instance = Instance.objects.get(pk=response.json()["id"])
    inventory_refresh(instance)
    with target.su(target.maintenance) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [target.admin]).fetchone() == (False,)
    alice = people["alice"]
    schema, owner, reader = target.name("ledger"), target.name("ledger_owner"), target.name("reader")

    # when a schema, a group role and a login role in it are applied by the worker
    _applied(wait_for_status, approved_request(
        instance, "schema", {"database": target.app, "name": schema, "owner_role": owner}, requester=alice))
    group = target.name("readers")
    _applied(wait_for_status, approved_request(instance, "role", {
        "name": group, "login": False, "member_of": [], "connection_limit": None, "valid_until": None},
        requester=alice))
    role_request = _applied(wait_for_status, approved_request(instance, "role", {
        "name": reader, "login": True, "member_of": [group], "connection_limit": None, "valid_until": None},
        requester=alice))
    # then the schema belongs to its owner role and the login is in the group, with no dangerous attribute
    with target.su() as conn:
        assert conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
                            [schema]).fetchone() == (owner,)
        assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [reader, group]).fetchone() == (True,)
        assert conn.execute(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls FROM pg_roles"
            " WHERE rolname = ANY(%s)", [[owner, group, reader]]).fetchall() == [(False,)] * 3
    password = secret_reveal(request=ChangeRequest.objects.get(pk=role_request.pk), user=alice)

    # when alice's DDL request (a table in her schema) is submitted, approved by bob and applied
    inventory_refresh(instance)
    ddl = request_submit(user=alice, actor_ip=None, type="ddl", instance=instance,
                         team=Team.objects.get(name="payments"), justification="entries table",
                         payload={"database": target.app, "schema": schema,
                                  "sql": "CREATE TABLE entries (id bigint PRIMARY KEY, amount numeric NOT NULL);"})
    request_approve(request=ddl, reviewer=people["bob"], comment="ok")
    _applied(wait_for_status, ddl)
    with target.su() as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'entries'",
                            [schema]).fetchone() == (owner,)

    # when SELECT on every table (and future ones) is granted to the group, until tomorrow
    inventory_refresh(instance)
    expires = (timezone.now() + timedelta(days=1)).isoformat()
    grant_request = _applied(wait_for_status, approved_request(instance, "grant", {
        "role": group, "database": target.app, "schema": schema, "privileges": ["SELECT"], "tables": "all",
        "default_privileges": True, "expires_at": expires, "schema_owner": owner}, requester=alice))
    # then the login reads the table through the group
    session = _login(target, reader, password)
    query = sql.SQL("SELECT count(*) FROM {}.entries").format(sql.Identifier(schema))
    assert session.execute(query).fetchone() == (0,)

    # when the drift scan runs: what the portal granted is not drift, a hand grant is
    assert drift_scan(instance)["findings"] == 0
    with target.su() as conn:
        conn.execute(sql.SQL("GRANT INSERT ON {}.entries TO {}").format(sql.Identifier(schema), sql.Identifier(group)))
    drift_scan(instance)
    assert DriftFinding.objects.filter(instance=instance, role=group, privilege="INSERT", status="open").exists()
    with target.su() as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON {}.entries FROM {}").format(sql.Identifier(schema), sql.Identifier(group)))

    # and the live entitlements explain the grant by its request
    report = entitlements_for(instances=[instance], role=group)
    assert report.unreachable == {}
    tables = [row for row in report.rows if row.kind == "tables" and row.schema == schema]
    assert tables and tables[0].request_id == grant_request.pk and not tables[0].unexplained

    # when the grant expires and the beat job runs
    grant = Grant.objects.get(request=grant_request)
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    filed = expire_grants()
    assert len(filed) == 1
    revoke = _applied(wait_for_status, ChangeRequest.objects.get(pk=filed[0]))
    # then the privileges are gone and the login's open session was ended (pg_signal_backend)
    assert revoke.type == "revoke"
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with _login(target, reader, password) as again, pytest.raises(psycopg.errors.InsufficientPrivilege):
        again.execute(query)
    with target.su() as conn:
        assert conn.execute("SELECT count(*) FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace"
                            " WHERE n.nspname = %s", [schema]).fetchone() == (0,)

    # and a reviewer's revoke of the USAGE left on the schema applies too
    with target.su() as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(group)))
    _applied(wait_for_status, approved_request(instance, "revoke", {
        "role": group, "database": target.app, "schema": schema, "privileges": ["USAGE"], "tables": None,
        "default_privileges": False, "expires_at": None, "schema_owner": owner}, requester=alice))
    with target.su() as conn:
        assert conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", [group, schema]).fetchone() == (False,)
    # and the admin login is still no superuser and never handed an attribute to a requested role
    with target.su() as conn:
        assert conn.execute(
            "SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)"
            " FROM pg_roles WHERE rolname = ANY(%s)", [[owner, group, reader]]).fetchone() == (False,)


def test_readme_shows_exactly_the_setup_sql_the_tests_use():
    # given the README's section on the admin login
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    # when the setup statements are rendered for the names README uses
    statements = setup_statements("dbportal_admin", password="change-me", databases=["postgres", "app"])
    # then README shows them verbatim, so the documented login is the tested one
    block = "\n".join(statement.as_string(None) + ";" for statement in statements)
    assert f"```sql\n{block}\n```" in readme
