"""The DDL plan module: validation, the rendered plan, and its effect on a real cluster."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from portal.errors import InvalidPayload
from portal.models import ManagedSchema, Team
from portal.selectors.plan_context import plan_context_for
from portal.services.requests import plan_review
from provisioning import dry_run
from provisioning.ddl.facts import facts_for_review
from provisioning.plans import ddl, module_for, plan_hash, plan_text
from tests.provisioning.ddl_support import admin_exec, admin_query, apply_steps, create_team_schema, reader_connect

GOLDEN_PAYLOAD = {
    "database": "app", "schema": "payments", "owner_role": "payments_owner",
    "sql": """
        create table invoices (
            id bigint generated always as identity primary key,
            customer text not null,   -- who pays
            amount numeric(12,2) not null check (amount >= 0)
        );
        comment on table invoices is 'one row per invoice; it''s final';
        alter table invoices add column note text;
        create index concurrently invoices_customer_idx on invoices (lower(customer));
    """,
}

GOLDEN_PLAN = [
    'SET LOCAL search_path TO "payments"',
    'SET LOCAL ROLE "payments_owner"',
    "CREATE TABLE invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL,"
    " amount numeric(12, 2) NOT NULL CHECK (amount >= 0))",
    "COMMENT ON TABLE invoices IS 'one row per invoice; it''s final'",
    "ALTER TABLE invoices ADD COLUMN note text",
    "RESET ROLE",
    # Outside the transaction SET LOCAL is gone: the index steps run as the owner for the session.
    'SET ROLE "payments_owner"',
    # A failed earlier build left an INVALID index that IF NOT EXISTS would skip: drop that one first.
    'DROP INDEX CONCURRENTLY IF EXISTS "payments"."invoices_customer_idx" -- only when: SELECT EXISTS (SELECT FROM'
    " pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'payments' AND c.relname = 'invoices_customer_idx' AND NOT i.indisvalid)",
    # every call is pinned to the built-in
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS invoices_customer_idx ON payments.invoices ((pg_catalog.lower(customer)))",
    "RESET ROLE",
]


def test_rendered_plan_text_is_golden():
    steps = ddl.render(GOLDEN_PAYLOAD)
    assert plan_text(steps) == GOLDEN_PLAN
    assert [s.transactional for s in steps] == [True] * 6 + [False] * 4
    assert [s.index_build for s in steps] == [False] * 7 + [True, True, False]
    # the requester's statements are marked as such: their failures keep no server text
    assert [s.user_sql for s in steps] == [False, False, True, True, True, False, False, False, True, False]
    assert not any(s.secret for s in steps)
    assert module_for("ddl") is ddl
    assert ddl.database(GOLDEN_PAYLOAD) == "app"


def test_rendering_is_deterministic_so_the_hash_binds():
    assert plan_hash(plan_text(ddl.render(GOLDEN_PAYLOAD))) == plan_hash(plan_text(ddl.render(dict(GOLDEN_PAYLOAD))))


def test_identifiers_in_the_portal_steps_are_quoted():
    payload = dict(GOLDEN_PAYLOAD, schema='we"ird', owner_role="Owner Role", sql="CREATE TABLE t (id int PRIMARY KEY)")
    assert plan_text(ddl.render(payload))[:2] == ['SET LOCAL search_path TO "we""ird"', 'SET LOCAL ROLE "Owner Role"']


@pytest.fixture
def team_schema(managed_instance):
    team, _ = Team.objects.get_or_create(name="payments")
    made = create_team_schema(managed_instance, "pay")
    ManagedSchema.objects.create(instance=managed_instance, database="app", name=made.schema,
                                 owner_role=made.owner, team=team)
    return team, made


def payload_for(made, text: str) -> dict:
    return {"database": "app", "schema": made.schema, "sql": text}


def ddl_validated(payload, instance, *, team, user) -> dict:
    """Validation as a submit runs it: the pure plan check, then the review rules over the table facts
    the service reads from the cluster (error findings refuse the payload)."""
    ctx = plan_context_for(instance, team, user, request_type="ddl")
    payload = ddl.validate(payload, ctx)
    plan_review(ddl, payload, ctx, instance)
    return payload


def ddl_reviewed(payload, instance, team) -> dict:
    ctx = plan_context_for(instance, team, None, request_type="ddl")
    facts, facts_error = facts_for_review(instance, ddl.facts_wanted(payload))
    return ddl.review(payload, ctx, facts=facts, facts_error=facts_error)


def test_validate_adds_the_owner_role_of_the_team_schema(managed_instance, team_schema, people):
    team, made = team_schema
    validated = ddl_validated(payload_for(made, "CREATE TABLE t (id int PRIMARY KEY)"), managed_instance,
                             team=team, user=people["alice"])
    assert validated == {"database": "app", "schema": made.schema, "owner_role": made.owner,
                         "sql": "CREATE TABLE t (id int PRIMARY KEY)"}


@pytest.mark.parametrize(("payload", "field"), [
    ({"database": "app", "schema": "not_ours", "sql": "CREATE TABLE t (id int)"}, "payload.schema"),
    ({"database": "other", "schema": "SCHEMA", "sql": "CREATE TABLE t (id int)"}, "payload.schema"),
    ({"schema": "SCHEMA", "sql": "CREATE TABLE t (id int)"}, "payload.database"),
    ({"database": "app", "sql": "CREATE TABLE t (id int)"}, "payload.schema"),
    ({"database": "app", "schema": "SCHEMA"}, "payload.sql"),
    ({"database": "app", "schema": "SCHEMA", "sql": "CREATE TABLE t (id int)", "extra": 1}, "payload.extra"),
    ({"database": "app", "schema": "SCHEMA", "sql": "CREATE TABLE t (id int)", "owner_role": "postgres"},
     "payload.owner_role"),
    ({"database": "app", "schema": "SCHEMA", "sql": "CREATE TABLE t (id int);\x00"}, "payload.sql"),
    ({"database": "app", "schema": "SCHEMA", "sql": "CREATE TABLE \ud800 (id int)"}, "payload.sql"),
    ("CREATE TABLE t (id int)", "payload"),
    ({"database": "app", "schema": "SCHEMA", "sql": "CREATE TABL t"}, "payload.sql"),
    ({"database": "app", "schema": "SCHEMA", "sql": "CREATE ROLE x SUPERUSER"}, "payload.sql"),
    ({"database": "app", "schema": "SCHEMA", "sql": 'CREATE TABLE "Bad" (id int PRIMARY KEY)'}, "payload.sql"),
])
def test_validate_refuses_bad_payloads_naming_the_field(managed_instance, team_schema, people, payload, field):
    team, made = team_schema
    if isinstance(payload, dict):
        payload = {k: (made.schema if v == "SCHEMA" else v) for k, v in payload.items()}
    with pytest.raises(InvalidPayload) as caught:
        ddl_validated(payload, managed_instance, team=team, user=people["alice"])
    assert field in caught.value.errors


def test_another_teams_schema_is_not_the_requesters(managed_instance, team_schema, people):
    team, made = team_schema
    other, _ = Team.objects.get_or_create(name="analytics")
    with pytest.raises(InvalidPayload) as caught:
        ddl_validated(payload_for(made, "DROP TABLE t"), managed_instance, team=other, user=people["dave"])
    assert "is not a schema of team analytics" in caught.value.errors["payload.schema"][0]


def test_default_privilege_reaches_a_table_created_by_the_plan(managed_instance, team_schema, people):
    # given a schema whose owner granted SELECT on future tables to the reader role
    team, made = team_schema
    payload = ddl_validated(payload_for(made, "CREATE TABLE ledger (id int PRIMARY KEY, amount int);"
                                              "CREATE INDEX CONCURRENTLY ledger_amount_idx ON ledger (amount)"),
                           managed_instance, team=team, user=people["alice"])
    # when the rendered plan runs as it says
    apply_steps(managed_instance, "app", ddl.render(payload))
    # then the table belongs to the owner role, and the reader can SELECT from it
    owner = admin_query(managed_instance, "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                        [made.schema, "ledger"])
    assert owner == [(made.owner,)]
    admin_exec(managed_instance, sql.SQL("INSERT INTO {}.ledger VALUES (1, 42)").format(sql.Identifier(made.schema)))
    with reader_connect(managed_instance, made) as conn:
        rows = conn.execute(sql.SQL("SELECT id, amount FROM {}.ledger").format(sql.Identifier(made.schema))).fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("INSERT INTO {}.ledger VALUES (2, 1)").format(sql.Identifier(made.schema)))
    assert rows == [(1, 42)]
    indexes = admin_query(managed_instance, "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                          [made.schema])
    assert indexes == [("ledger_amount_idx",), ("ledger_pkey",)]
    # and the concurrent index step is idempotent: running the whole plan again only fails on CREATE TABLE
    with pytest.raises(psycopg.errors.DuplicateTable):
        apply_steps(managed_instance, "app", ddl.render(payload))
    steps = [s for s in ddl.render(payload) if not s.transactional]
    apply_steps(managed_instance, "app", steps)


def test_multi_statement_plan_runs_in_order(managed_instance, team_schema, people):
    team, made = team_schema
    text = """
        CREATE TYPE status AS ENUM ('open', 'paid');
        CREATE TABLE bills (id int PRIMARY KEY, s status NOT NULL DEFAULT 'open');
        CREATE SEQUENCE bill_no;
        ALTER TABLE bills ADD COLUMN no bigint DEFAULT nextval('bill_no');
        CREATE VIEW open_bills AS SELECT id, no FROM bills WHERE s = 'open';
        COMMENT ON VIEW open_bills IS 'unpaid';
        ALTER TABLE bills RENAME COLUMN no TO number;
    """
    payload = ddl_validated(payload_for(made, text), managed_instance, team=team, user=people["alice"])
    apply_steps(managed_instance, "app", ddl.render(payload))
    columns = admin_query(managed_instance, "SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE table_schema = %s ORDER BY table_name, ordinal_position", [made.schema])
    # the view kept the output name it was created with; the table's column was renamed after it
    assert columns == [("bills", "id"), ("bills", "s"), ("bills", "number"), ("open_bills", "id"),
                       ("open_bills", "no")]


def test_dry_run_finds_errors_and_changes_nothing(managed_instance, team_schema, people):
    team, made = team_schema
    good = ddl_validated(payload_for(made, "CREATE TABLE t (id int PRIMARY KEY, n int); ALTER TABLE t ADD COLUMN m int"),
                        managed_instance, team=team, user=people["alice"])
    result = dry_run.run(managed_instance, team, good)
    assert result["ok"] is True and result["error"] == "" and result["statement_index"] is None
    # nothing was committed
    assert admin_query(managed_instance, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", [made.schema]) == [(0,)]

    missing_column = ddl_validated(
        payload_for(made, "CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t ALTER COLUMN nope TYPE bigint"),
        managed_instance, team=team, user=people["alice"])
    result = dry_run.run(managed_instance, team, missing_column)
    assert result["ok"] is False and result["statement_index"] == 2
    # the condition and where, never the server's text (it can quote values the statement computed)
    assert result["sqlstate"] == "42703" and result["error"].startswith("undefined_column (SQLSTATE 42703)")
    assert "nope" not in result["error"] and "does not exist" not in result["error"]

    mismatch = ddl_validated(
        payload_for(made, "CREATE TABLE t (id int PRIMARY KEY, d date DEFAULT 'tomorrow-ish')"),
        managed_instance, team=team, user=people["alice"])
    result = dry_run.run(managed_instance, team, mismatch)
    assert result["ok"] is False and result["statement_index"] == 1 and result["sqlstate"] == "22007"

    missing_table = ddl_validated(payload_for(made, "DROP TABLE ghost"), managed_instance, team=team,
                                 user=people["alice"])
    result = dry_run.run(managed_instance, team, missing_table)
    assert result["ok"] is False and result["sqlstate"] == "42P01" and result["statement_index"] == 1


def test_dry_run_runs_as_the_owner_role_over_the_executor_login_and_skips_concurrent_steps(managed_instance, team_schema, people):
    team, made = team_schema
    # the owner role may not touch a table it does not own, even though the admin could
    admin_exec(managed_instance, sql.SQL("CREATE TABLE {}.admins_table (id int PRIMARY KEY)").format(
        sql.Identifier(made.schema)))
    payload = ddl_validated(payload_for(made, "ALTER TABLE admins_table ADD COLUMN x int;"
                                              "CREATE INDEX CONCURRENTLY ix ON admins_table (id)"),
                           managed_instance, team=team, user=people["alice"])
    result = dry_run.run(managed_instance, team, payload)
    assert result["ok"] is False and result["sqlstate"] == "42501"
    assert result["error"].startswith("insufficient_privilege (SQLSTATE 42501)")
    assert result["skipped"] == [2] and "not dry-run" in result["note"]


def test_dry_run_applies_to_dev_and_staging_only(managed_instance, team_schema, people):
    team, made = team_schema
    payload = ddl_validated(payload_for(made, "CREATE TABLE t (id int PRIMARY KEY)"), managed_instance,
                           team=team, user=people["alice"])
    for environment, runs in (("dev", True), ("staging", True), ("prod", False)):
        managed_instance.environment = environment
        assert dry_run.applies_to(managed_instance) is runs
        # the plan says whether the service dry-runs it; the run itself is the service's I/O
        assert ddl.dry_run_wanted(plan_context_for(managed_instance, team, None, request_type="ddl")) is runs
        if runs:
            assert dry_run.run(managed_instance, team, payload)["ok"]


def test_review_reads_table_facts_from_the_cluster(managed_instance, team_schema, people):
    # given an existing table with rows, owned by the schema owner
    team, made = team_schema
    schema = sql.Identifier(made.schema)
    admin_exec(managed_instance,
               sql.SQL("CREATE TABLE {}.orders (id int PRIMARY KEY, note varchar(20))").format(schema),
               sql.SQL("ALTER TABLE {}.orders OWNER TO {}").format(schema, sql.Identifier(made.owner)),
               sql.SQL("INSERT INTO {}.orders SELECT g, 'n' FROM generate_series(1, 500) g").format(schema))
    # when a NOT NULL column without default is requested, then it is refused at validate (error rule)
    with pytest.raises(InvalidPayload) as caught:
        ddl_validated(payload_for(made, "ALTER TABLE orders ADD COLUMN region text NOT NULL"),
                     managed_instance, team=team, user=people["alice"])
    assert "[ddl.add_column_not_null_without_default]" in caught.value.errors["payload.sql"][0]
    # and widening varchar is not a rewrite while narrowing is (facts carry column types)
    widen = ddl_validated(payload_for(made, "ALTER TABLE orders ALTER COLUMN note TYPE varchar(40)"),
                         managed_instance, team=team, user=people["alice"])
    assert ddl_reviewed(widen, managed_instance, team)["findings"] == []
    narrow = ddl_validated(payload_for(made, "ALTER TABLE orders ALTER COLUMN note TYPE int USING 0"),
                          managed_instance, team=team, user=people["alice"])
    reviewed = ddl_reviewed(narrow, managed_instance, team)
    assert reviewed["risk"] == "high" and reviewed["findings"][0]["rule"] == "ddl.column_type_rewrite"


def test_review_degrades_when_the_cluster_is_unreachable(managed_instance, team_schema, people):
    team, made = team_schema
    payload = ddl_validated(payload_for(made, "CREATE TABLE t (id int PRIMARY KEY)"), managed_instance,
                           team=team, user=people["alice"])
    managed_instance.port = 1  # nothing listens there
    reviewed = ddl_reviewed(payload, managed_instance, team)
    assert reviewed["risk"] == "low"
    assert [f["rule"] for f in reviewed["findings"]] == ["ddl.facts_unavailable"]
    assert "password" not in reviewed["findings"][0]["message"]


def test_drop_index_concurrently_is_its_own_idempotent_step(managed_instance, team_schema, people):
    # given a table with an index, made by an earlier plan
    team, made = team_schema
    create = ddl_validated(payload_for(made, "CREATE TABLE t (id int PRIMARY KEY, x int); CREATE INDEX t_x_idx ON t (x)"),
                          managed_instance, team=team, user=people["alice"])
    apply_steps(managed_instance, "app", ddl.render(create))
    # when a request drops it concurrently
    drop = ddl_validated(payload_for(made, "ALTER TABLE t ADD COLUMN y int; DROP INDEX CONCURRENTLY t_x_idx"),
                        managed_instance, team=team, user=people["alice"])
    steps = ddl.render(drop)
    # then the drop runs outside the transaction, qualified and with IF EXISTS
    assert [(s.text, s.transactional) for s in steps][-4:] == [
        ("RESET ROLE", True), (f'SET ROLE "{made.owner}"', False),
        (f"DROP INDEX CONCURRENTLY IF EXISTS {made.schema}.t_x_idx", False), ("RESET ROLE", False)]
    apply_steps(managed_instance, "app", steps)
    apply_steps(managed_instance, "app", [s for s in steps if not s.transactional])  # again: a no-op
    indexes = admin_query(managed_instance, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", [made.schema])
    assert indexes == [("t_pkey",)]
