"""The data dictionary (#21) on a real cluster: read from the catalog, searched, exported, its history
linked to the requests that made each change, comment edits filed as DDL requests."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.utils import timezone
from psycopg import sql

from portal.models import ChangeRequest, DictionarySnapshot, ManagedSchema, Team
from portal.services.dictionary import OUTSIDE, dictionary_refresh
from portal.services.requests import request_submit
from portal.tasks import dictionary_refresh_instance
from provisioning.dictionary import read_dictionary
from tests.portal.requests_helpers import apply_for_test, unique
from tests.provisioning.helpers import admin_conn

pytestmark = pytest.mark.slow


@pytest.fixture
def payments_schema(transactional_db, people, managed_instance, managed_cluster):
    """A schema of payments made through the portal, with two tables made by hand (the owner's)."""
    payments = Team.objects.get(name="payments")
    request = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                             team=payments, justification="set up", payload={"database": "app", "name": unique("pay")})
    apply_for_test(request)
    schema = request.payload["name"]
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("""
            CREATE TABLE {s}.customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE);
            CREATE TABLE {s}.invoices (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                customer_id bigint NOT NULL REFERENCES {s}.customers (id),
                amount numeric(12, 2) NOT NULL DEFAULT 0 CHECK (amount >= 0),
                note text);
            CREATE INDEX invoices_note_idx ON {s}.invoices (note);
            COMMENT ON TABLE {s}.invoices IS 'one row per invoice';
            COMMENT ON COLUMN {s}.invoices.amount IS '=HYPERLINK("x") | in euros';
            ALTER TABLE {s}.invoices OWNER TO {owner};
            ANALYZE {s}.invoices;
        """).format(s=sql.Identifier(schema), owner=sql.Identifier(request.payload["owner_role"])))
    yield {"schema": schema, "owner": request.payload["owner_role"], "request": request}
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _table(body: dict, schema: str, table: str) -> dict:
    return body["schemas"][schema]["tables"][table]


def test_the_catalog_is_read_whole(managed_instance, payments_schema):
    schema = payments_schema["schema"]
    body = read_dictionary(managed_instance, "app")
    invoices = _table(body, schema, "invoices")
    assert invoices["kind"] == "table" and invoices["comment"] == "one row per invoice"
    assert invoices["owner"] == payments_schema["owner"] and invoices["total_bytes"] > 0
    columns = {c["name"]: c for c in invoices["columns"]}
    assert list(columns) == ["id", "customer_id", "amount", "note"]
    assert columns["amount"] == {"name": "amount", "type": "numeric(12,2)", "nullable": False, "default": "0",
                                 "comment": '=HYPERLINK("x") | in euros'}
    assert columns["note"]["nullable"] is True
    kinds = {k["type"]: k for k in invoices["constraints"]}
    assert kinds["foreign key"]["references"] == f"{schema}.customers"
    assert "REFERENCES" in kinds["foreign key"]["definition"] and "primary key" in kinds and "check" in kinds
    assert {i["name"] for i in invoices["indexes"]} == {"invoices_pkey", "invoices_note_idx"}
    assert body["schemas"][schema]["owner"] == payments_schema["owner"]
    assert "dbportal_meta" not in body["schemas"] and "pg_catalog" not in body["schemas"]


def test_the_catalog_read_keeps_columns_in_order_and_writes_index_definitions(managed_instance, managed_cluster):
    # given a table made by hand with a dropped column, a generated column, a composite-typed
    # column and indexes of every shape the reader writes or asks the server for
    schema = unique("shapes")
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("""
            CREATE SCHEMA {s};
            CREATE TYPE {s}.point2 AS (x int, y int);
            CREATE TABLE {s}."Odd table" (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                gone text,
                qty integer NOT NULL DEFAULT 1,
                price numeric(10, 2) DEFAULT 0.5,
                total numeric GENERATED ALWAYS AS (qty * price) STORED,
                "a""b c" varchar(40),
                at {s}.point2);
            ALTER TABLE {s}."Odd table" DROP COLUMN gone;
            CREATE UNIQUE INDEX odd_qty_incl ON {s}."Odd table" (qty, price) INCLUDE ("a""b c");
            CREATE INDEX odd_lower ON {s}."Odd table" (lower("a""b c"));
            CREATE INDEX odd_desc ON {s}."Odd table" (qty DESC);
            CREATE VIEW {s}.odd_view AS SELECT id, qty FROM {s}."Odd table";
            CREATE TABLE {s}.modifiers (a numeric(5), b numeric(3, -1), c varchar(1), d char(10), e char,
                f numeric, g varchar, h time(3), i bit(8), j numeric(12, 2)[], k text[], l {s}.point2[]);
        """).format(s=sql.Identifier(schema)))
        catalog_types = dict(conn.execute(sql.SQL(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = {}::regclass AND attnum > 0").format(
                sql.Literal(sql.Identifier(schema, "modifiers").as_string(None)))).fetchall())
    try:
        # when the dictionary is read
        body = read_dictionary(managed_instance, "app")
        table = _table(body, schema, "Odd table")
        # then the columns come in table order, the dropped one left out, with types and defaults
        assert [c["name"] for c in table["columns"]] == ["id", "qty", "price", "total", 'a"b c', "at"]
        columns = {c["name"]: c for c in table["columns"]}
        assert columns["qty"]["default"] == "1" and columns["price"]["default"] == "0.5"
        assert columns["total"]["default"] == "((qty)::numeric * price)"
        assert columns["price"]["type"] == "numeric(10,2)" and columns['a"b c']["type"] == "character varying(40)"
        assert columns["at"]["type"] == f"{schema}.point2" and columns["id"]["nullable"] is False
        # and a plain index is written from its columns (past the dropped one), the others by the server
        indexes = {i["name"]: i["definition"] for i in table["indexes"]}
        quoted = sql.Identifier(schema).as_string(None)
        assert indexes["odd_qty_incl"] == (f'CREATE UNIQUE INDEX "odd_qty_incl" ON {quoted}."Odd table" USING "btree" '
                                           '("qty", "price") INCLUDE ("a""b c")')
        assert "lower(" in indexes["odd_lower"] and "DESC" in indexes["odd_desc"]
        # and every type with a modifier reads as the server's format_type writes it
        assert {c["name"]: c["type"] for c in _table(body, schema, "modifiers")["columns"]} == catalog_types
        assert _table(body, schema, "odd_view")["kind"] == "view"
        assert [c["name"] for c in _table(body, schema, "odd_view")["columns"]] == ["id", "qty"]
    finally:
        with admin_conn(managed_cluster, "app") as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_history_links_a_change_to_its_request_or_says_outside_the_portal(managed_instance, managed_cluster,
                                                                          payments_schema, people):
    schema = payments_schema["schema"]
    # given a baseline snapshot (through the per-instance task, as beat runs it)
    result = dictionary_refresh_instance(managed_instance.pk)
    assert result["app"] in ("ok", "changed")
    first = DictionarySnapshot.objects.get(instance=managed_instance, database="app")
    assert first.changes == []
    # when nothing changes, no new snapshot
    dictionary_refresh(managed_instance)
    assert DictionarySnapshot.objects.filter(instance=managed_instance, database="app").count() == 1
    # when a column is added by hand and a comment changed through a request alice filed and the portal applied
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.customers ADD COLUMN phone text").format(sql.Identifier(schema)))
    from portal.services.dictionary import dictionary_comment_request

    request = dictionary_comment_request(user=people["alice"], actor_ip=None, instance=managed_instance,
                                         database="app", schema=schema, table="invoices", column=None,
                                         comment="invoices, one row each", justification="clearer")
    apply_for_test(request)
    ChangeRequest.objects.filter(pk=request.pk).update(applied_at=timezone.now())
    dictionary_refresh(managed_instance)
    # then the new snapshot lists both changes, each with its origin
    latest = DictionarySnapshot.objects.filter(instance=managed_instance, database="app").order_by("-taken_at").first()
    changes = {(c["object"], c["table"], c["name"]): c for c in latest.changes}
    phone = changes[("column", "customers", "phone")]
    assert phone["action"] == "added" and phone["request_id"] is None and phone["source"] == OUTSIDE
    comment = changes[("table comment", "invoices", None)]
    assert comment["before"] == "one row per invoice" and comment["after"] == "invoices, one row each"
    assert comment["request_id"] == request.pk and comment["source"] == f"request #{request.pk}"
    assert len(latest.changes) == 2


def test_editing_a_comment_files_a_reviewed_ddl_request_for_the_owning_team(managed_instance, payments_schema,
                                                                            api_for):
    schema = payments_schema["schema"]
    dictionary_refresh(managed_instance)
    url = f"/api/v1/instances/{managed_instance.pk}/dictionary/app/comment/"
    body = {"schema": schema, "table": "invoices", "column": "note", "comment": "it's free text",
            "justification": "document the column"}
    answer = api_for("alice").post(url, body, format="json")
    assert answer.status_code == 201, answer.json()
    request = ChangeRequest.objects.get(pk=answer.json()["id"])
    assert request.type == "ddl" and request.team.name == "payments" and request.status == "submitted"
    assert f"COMMENT ON COLUMN \"{schema}\".\"invoices\".\"note\" IS 'it''s free text'" in " ".join(request.plan) \
        or any("COMMENT ON COLUMN" in step and "it''s free text" in step for step in request.plan)
    # a member of another team, a reviewer: refused, nothing filed
    before = ChangeRequest.objects.count()
    assert api_for("dave").post(url, body, format="json").status_code == 403
    assert api_for("bob").post(url, body, format="json").status_code == 403
    # an object not in the dictionary: a 400 naming the field
    for field, value in (("table", "nope"), ("column", "nope"), ("schema", "nope")):
        answer = api_for("alice").post(url, {**body, field: value}, format="json")
        assert answer.status_code == 400 and field in answer.json()["errors"], field
    # hostile text stays a literal: the quote is doubled, nothing else runs
    sneaky = api_for("alice").post(url, {**body, "comment": "x'; DROP TABLE t; --"}, format="json")
    assert sneaky.status_code == 201
    plan = " ".join(ChangeRequest.objects.get(pk=sneaky.json()["id"]).plan)
    assert "IS 'x''; DROP TABLE t; --'" in plan
    assert ChangeRequest.objects.count() == before + 1


def test_figures_are_scoped_exports_and_search(managed_instance, payments_schema, api_for,
                                               django_assert_max_num_queries):
    schema = payments_schema["schema"]
    dictionary_refresh(managed_instance)
    url = f"/api/v1/instances/{managed_instance.pk}/dictionary/app/"
    # alice (payments) sees her schema's figures; dave (analytics) its structure without figures
    mine = next(s for s in api_for("alice").get(url).json()["schemas"] if s["name"] == schema)
    assert mine["team"] == "payments" and mine["figures"] is True
    assert next(t for t in mine["tables"] if t["name"] == "invoices")["total_bytes"] > 0
    bob = api_for("bob")
    with django_assert_max_num_queries(10):
        assert bob.get(url).status_code == 200
    theirs = next(s for s in api_for("dave").get(url).json()["schemas"] if s["name"] == schema)
    invoices = next(t for t in theirs["tables"] if t["name"] == "invoices")
    assert theirs["figures"] is False and invoices["total_bytes"] is None and invoices["rows_estimate"] is None
    assert invoices["comment"] == "one row per invoice" and len(invoices["columns"]) == 4
    # exports
    md = api_for("alice").get(url + "?export=md")
    assert md.status_code == 200 and md["Content-Type"].startswith("text/markdown")
    text = md.content.decode()
    assert f"### Table `{schema}.invoices`" in text and '=HYPERLINK("x") \\| in euros' in text
    rows = list(csv.DictReader(io.StringIO(api_for("dave").get(url + "?export=csv").content.decode())))
    amount = next(r for r in rows if r["schema"] == schema and r["column"] == "amount")
    assert amount["type"] == "numeric(12,2)" and amount["team"] == "payments"
    assert amount["comment"].startswith("'=HYPERLINK")  # never a formula in a spreadsheet
    assert amount["total_bytes"] == ""  # dave: no figures of another team's schema
    as_json = json.loads(api_for("alice").get(url + "?export=json").content)
    assert as_json["database"] == "app"
    assert api_for("alice").get(url + "?export=pdf").json()["errors"].keys() == {"export"}
    # search across instances, by name or comment
    found = api_for("dave").get("/api/v1/dictionary/search/?q=IN EUROS").json()["results"]
    assert {"instance": managed_instance.name, "database": "app", "schema": schema, "team": "payments",
            "kind": "column", "table": "invoices", "column": "amount", "comment": '=HYPERLINK("x") | in euros'} in found
    assert api_for("dave").get("/api/v1/dictionary/search/?q=x").status_code == 400
    # history, hints, list of databases; unknown database 404
    assert api_for("alice").get(url + "history/").status_code == 200
    hints = api_for("alice").get(url + "hints/").json()["results"]
    assert any(h["kind"] == "unused_index" and h["index"] == "invoices_note_idx" for h in hints)
    assert not any(h["schema"] == schema for h in api_for("dave").get(url + "hints/").json()["results"])
    dbs = api_for("dave").get(f"/api/v1/instances/{managed_instance.pk}/dictionary/").json()["results"]
    assert "app" in {d["database"] for d in dbs}
    assert api_for("alice").get(f"/api/v1/instances/{managed_instance.pk}/dictionary/nope/").status_code == 404
    assert ManagedSchema.objects.filter(name=schema).exists()


def test_the_pages_show_the_dictionary_its_history_and_a_search(managed_instance, payments_schema, client, people,
                                                                 django_assert_max_num_queries):
    schema = payments_schema["schema"]
    dictionary_refresh(managed_instance)
    client.force_login(people["dave"])
    with django_assert_max_num_queries(15):
        page = client.get(f"/instances/{managed_instance.pk}/dictionary/?database=app")
    text = page.content.decode()
    assert page.status_code == 200 and f"<code>{schema}</code>" in text and "one row per invoice" in text
    assert "numeric(12,2)" in text and "?export=md" in text
    found = client.get("/dictionary/?q=in euros").content.decode()
    assert "dictionary-results" in found and "invoices" in found and schema in found
    bad = client.get("/dictionary/?q=x")
    assert bad.status_code == 400 and "2 to 100 characters" in bad.content.decode()
    assert client.get("/instances/999999/dictionary/").status_code == 404
