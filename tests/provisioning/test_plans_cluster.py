"""Plans run on the real managed cluster do exactly what their text says (checked in the catalogs)."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from portal.models import ManagedRole, ManagedSchema, Team
from portal.selectors.plan_context import plan_context_for
from provisioning.connections import connect, conninfo
from provisioning.inventory import inventory_refresh
from provisioning.plans import module_for
from tests.provisioning.helpers import unique


def apply(instance, request_type: str, payload: dict, secrets_: dict | None = None) -> None:
    """Run a plan the way the executor does: one transaction in the plan's database."""
    module = module_for(request_type)
    with connect(instance, module.database(payload)) as conn:
        with conn.transaction():
            for step in module.render(payload, secrets=secrets_):
                conn.execute(step.statement)


def scalar(instance, query: str, params=(), database: str = "app"):
    with connect(instance, database, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


@pytest.fixture
def team(db):
    return Team.objects.create(name="payments")


def validated(instance, team, request_type: str, payload: dict) -> dict:
    inventory_refresh(instance)
    return module_for(request_type).validate(payload, plan_context_for(instance, team, None, request_type=request_type))


def record_schema(instance, team, payload: dict) -> None:
    ManagedRole.objects.get_or_create(instance=instance, name=payload["owner_role"], team=team, login=False)
    ManagedSchema.objects.create(instance=instance, database=payload["database"], name=payload["name"],
                                 owner_role=payload["owner_role"], team=team)


def test_inventory_reads_databases_schemas_tables_and_roles(managed_instance):
    role = unique("inv")
    with connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} NOLOGIN").format(psycopg.sql.Identifier(role)))
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Identifier(role)))
        conn.execute(psycopg.sql.SQL("CREATE TABLE {}.t1 (id int)").format(psycopg.sql.Identifier(role)))
    inventory = inventory_refresh(managed_instance)
    assert {"app", "postgres"} <= set(inventory.databases())
    assert inventory.schemas("app")[role] == {"owner": role, "tables": ["t1"]}
    assert inventory.roles()["postgres"]["superuser"] is True
    assert inventory.roles()[role]["login"] is False
    assert inventory.refreshed_at is not None
    assert not any(name.startswith("pg_") for name in inventory.roles())


def test_schema_plan_creates_a_schema_owned_by_a_nologin_group_role(managed_instance, team):
    name = unique("sch")
    payload = validated(managed_instance, team, "schema", {"database": "app", "name": name})
    apply(managed_instance, "schema", payload)
    owner = scalar(managed_instance, "SELECT json_build_object('name', r.rolname, 'login', r.rolcanlogin) "
                   "FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = %s", (name,))
    assert owner == {"name": f"{name}_owner", "login": False}


def test_schema_plan_reuses_an_existing_owner_role(managed_instance, team):
    first = validated(managed_instance, team, "schema", {"database": "app", "name": unique("sch")})
    apply(managed_instance, "schema", first)
    record_schema(managed_instance, team, first)
    second = validated(managed_instance, team, "schema",
                       {"database": "app", "name": unique("sch"), "owner_role": first["owner_role"]})
    assert second["create_owner_role"] is False  # the plan asserts the role exists instead of creating it
    apply(managed_instance, "schema", second)
    assert scalar(managed_instance, "SELECT count(*) FROM pg_namespace WHERE nspowner = "
                  "(SELECT oid FROM pg_roles WHERE rolname = %s)", (first["owner_role"],)) == 2


def test_login_role_gets_the_verifier_and_logs_in_with_the_password(managed_instance, managed_cluster, team):
    name, password = unique("svc"), secrets.token_urlsafe(24)
    payload = validated(managed_instance, team, "role", {"name": name, "login": True, "connection_limit": 3,
                                                         "valid_until": "2035-01-01T00:00:00Z"})
    with connect(managed_instance) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
    apply(managed_instance, "role", payload, {"password": verifier})
    attributes = scalar(managed_instance, "SELECT row_to_json(r) FROM (SELECT rolcanlogin, rolsuper, rolcreatedb, "
                        "rolcreaterole, rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil::date::text "
                        "FROM pg_roles WHERE rolname = %s) r", (name,))
    assert attributes == {"rolcanlogin": True, "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False,
                          "rolreplication": False, "rolbypassrls": False, "rolconnlimit": 3,
                          "rolvaliduntil": "2035-01-01"}
    assert scalar(managed_instance, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = %s",
                  (name,))
    params = conninfo(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password)
    with psycopg.connect(**params) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name


def test_nologin_role_joins_only_allowed_groups(managed_instance, team):
    group = unique("grp")
    apply(managed_instance, "role", validated(managed_instance, team, "role", {"name": group, "login": False}))
    ManagedRole.objects.create(instance=managed_instance, name=group, team=team, login=False)
    member = unique("mem")
    payload = validated(managed_instance, team, "role", {"name": member, "login": False, "member_of": [group]})
    apply(managed_instance, "role", payload)
    assert scalar(managed_instance, "SELECT pg_has_role(%s, %s, 'MEMBER')", (member, group))
    assert not scalar(managed_instance, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (member,))


@pytest.fixture
def schema_with_tables(managed_instance, team):
    """A managed schema with tables t1, t2 and a NOLOGIN role of the team to grant to."""
    schema_payload = validated(managed_instance, team, "schema", {"database": "app", "name": unique("acc")})
    apply(managed_instance, "schema", schema_payload)
    record_schema(managed_instance, team, schema_payload)
    schema, owner = schema_payload["name"], schema_payload["owner_role"]
    with connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(owner)))
        for table in ("t1", "t2"):
            conn.execute(psycopg.sql.SQL("CREATE TABLE {}.{} (id int)").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)))
    grantee = unique("reader")
    apply(managed_instance, "role", validated(managed_instance, team, "role", {"name": grantee, "login": False}))
    ManagedRole.objects.create(instance=managed_instance, name=grantee, team=team, login=False)
    return {"schema": schema, "owner": owner, "role": grantee}


def privileges(instance, role: str, schema: str) -> dict:
    """What `role` holds: on the schema, per table, and default privileges of the schema."""
    query = """
    SELECT json_build_object(
      'schema', (SELECT coalesce(json_agg(p ORDER BY p), '[]') FROM unnest(ARRAY['USAGE', 'CREATE']) p
                  WHERE has_schema_privilege(%(role)s, %(schema)s, p)),
      'tables', (SELECT coalesce(json_object_agg(c.relname, (SELECT json_agg(a.privilege_type ORDER BY
                          a.privilege_type) FROM aclexplode(c.relacl) a WHERE a.grantee = r.oid)), '{}')
                   FROM pg_class c, pg_roles r WHERE r.rolname = %(role)s
                    AND c.relnamespace = %(schema)s::regnamespace AND c.relkind = 'r'),
      'defaults', (SELECT coalesce(json_agg(a.privilege_type ORDER BY a.privilege_type), '[]')
                     FROM pg_default_acl d, aclexplode(d.defaclacl) a, pg_roles r
                    WHERE d.defaclnamespace = %(schema)s::regnamespace AND a.grantee = r.oid
                      AND r.rolname = %(role)s))
    """
    return scalar(instance, query, {"role": role, "schema": schema})


def test_read_grant_on_all_tables_with_default_privileges_covers_future_tables(managed_instance, team,
                                                                               schema_with_tables):
    world = schema_with_tables
    payload = validated(managed_instance, team, "grant", {
        "role": world["role"], "database": "app", "schema": world["schema"], "privileges": ["SELECT"],
        "default_privileges": True})
    apply(managed_instance, "grant", payload)
    with connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(world["owner"])))
        conn.execute(psycopg.sql.SQL("CREATE TABLE {}.later (id int)").format(psycopg.sql.Identifier(world["schema"])))
    assert privileges(managed_instance, world["role"], world["schema"]) == {
        "schema": ["USAGE"], "tables": {"t1": ["SELECT"], "t2": ["SELECT"], "later": ["SELECT"]},
        "defaults": ["SELECT"]}


def test_write_grant_on_listed_tables_touches_only_those(managed_instance, team, schema_with_tables):
    world = schema_with_tables
    payload = validated(managed_instance, team, "grant", {
        "role": world["role"], "database": "app", "schema": world["schema"],
        "privileges": ["SELECT", "INSERT", "UPDATE", "DELETE"], "tables": ["t2"]})
    apply(managed_instance, "grant", payload)
    assert privileges(managed_instance, world["role"], world["schema"]) == {
        "schema": ["USAGE"], "tables": {"t1": None, "t2": ["DELETE", "INSERT", "SELECT", "UPDATE"]},
        "defaults": []}


def test_revoke_takes_back_exactly_what_it_lists(managed_instance, team, schema_with_tables):
    world = schema_with_tables
    base = {"role": world["role"], "database": "app", "schema": world["schema"]}
    apply(managed_instance, "grant", validated(managed_instance, team, "grant", {
        **base, "privileges": ["USAGE", "CREATE", "SELECT", "INSERT"], "default_privileges": True}))
    apply(managed_instance, "revoke", validated(managed_instance, team, "revoke", {
        **base, "privileges": ["CREATE", "INSERT"], "default_privileges": True}))
    assert privileges(managed_instance, world["role"], world["schema"]) == {
        "schema": ["USAGE"], "tables": {"t1": ["SELECT"], "t2": ["SELECT"]}, "defaults": ["SELECT"]}
    apply(managed_instance, "revoke", validated(managed_instance, team, "revoke", {
        **base, "privileges": ["USAGE", "SELECT"], "default_privileges": True}))
    assert privileges(managed_instance, world["role"], world["schema"]) == {
        "schema": [], "tables": {"t1": None, "t2": None}, "defaults": []}
