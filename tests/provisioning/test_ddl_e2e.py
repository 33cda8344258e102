"""DDL requests end to end: API submit (rules, dry run), review, a real worker applies, audit per statement."""

from __future__ import annotations

import pytest
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import RequestStatus
from portal.models import ChangeRequest, Team
from portal.services.requests import request_submit
from provisioning import connections
from tests.portal.requests_helpers import apply_for_test, unique

pytestmark = pytest.mark.slow


@pytest.fixture
def payments_schema(transactional_db, people, managed_instance):
    """alice's team owns a schema (applied for real) and a read role with default SELECT on its tables."""
    payments = Team.objects.get(name="payments")

    def submit(type_, payload):
        request = request_submit(user=people["alice"], actor_ip=None, type=type_, instance=managed_instance,
                                 team=payments, justification="set up", payload=payload)
        apply_for_test(request)
        return request

    schema = submit("schema", {"database": "app", "name": unique("pay")}).payload
    reader = submit("role", {"name": unique("pay_read"), "login": False}).payload["name"]
    submit("grant", {"role": reader, "database": "app", "schema": schema["name"], "privileges": ["SELECT"],
                     "tables": "all", "default_privileges": True})
    return {"schema": schema["name"], "owner": schema["owner_role"], "reader": reader}


def ddl_body(schema: str, text: str) -> dict:
    return {"type": "ddl", "instance": "demo", "team": "payments", "justification": "invoices table",
            "payload": {"database": "app", "schema": schema, "sql": text}}


def as_role(instance, role: str, query: sql.Composable) -> list[tuple]:
    with connections.connect(instance, "app") as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return conn.execute(query).fetchall()


def test_alice_creates_a_table_bob_approves_the_worker_applies_and_her_read_role_selects(
    payments_schema, api_for, managed_instance, celery_worker, wait_for_status
):
    schema = payments_schema["schema"]
    # given alice submits CREATE TABLE in her schema
    response = api_for("alice").post("/api/v1/requests/", ddl_body(schema, """
        CREATE TABLE invoices (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            customer text NOT NULL,
            amount numeric(12, 2) NOT NULL CHECK (amount >= 0)
        );
        COMMENT ON TABLE invoices IS 'one row per invoice';
        CREATE INDEX CONCURRENTLY invoices_customer_idx ON invoices (customer);
    """), format="json")
    # then it is accepted at low risk, with the exact plan, no findings and a clean dry run
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["risk"] == "low" and body["findings"] == []
    assert body["plan"][:2] == [f'SET LOCAL search_path TO "{schema}"',
                                f'SET LOCAL ROLE "{payments_schema["owner"]}"']
    assert body["plan"][-2:] == [f"CREATE INDEX CONCURRENTLY IF NOT EXISTS invoices_customer_idx ON {schema}.invoices "
                                 "(customer)", "RESET ROLE"]
    assert body["dry_run"]["ok"] is True and body["dry_run"]["skipped"] == [3]
    assert body["payload"]["owner_role"] == payments_schema["owner"]
    # and the dry run left nothing behind
    with connections.connect(managed_instance, "app") as conn:
        assert conn.execute("SELECT to_regclass(%s)", [f"{schema}.invoices"]).fetchone()[0] is None

    # when bob approves and the worker applies it
    approved = api_for("bob").post(f"/api/v1/requests/{body['id']}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200, approved.json()
    request = wait_for_status(body["id"], {"applied", "failed"})
    assert request.status == RequestStatus.APPLIED, request.status_detail

    # then the table belongs to the schema owner and alice's read role can SELECT from it
    owner = payments_schema["owner"]
    with connections.connect(managed_instance, "app", autocommit=True) as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'invoices'",
                            [schema]).fetchone() == (owner,)
        conn.execute(sql.SQL("INSERT INTO {}.invoices (customer, amount) VALUES ('acme', 12.5)").format(
            sql.Identifier(schema)))
        assert conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                            [schema]).fetchall() == [("invoices_customer_idx",), ("invoices_pkey",)]
    rows = as_role(managed_instance, payments_schema["reader"],
                   sql.SQL("SELECT customer, amount::text FROM {}.invoices").format(sql.Identifier(schema)))
    assert rows == [("acme", "12.50")]
    # and each statement of the plan that ran is its own sql.executed audit event, in order: the
    # drop-if-INVALID step before the index build found no index and ran nothing
    executed = AuditEvent.objects.filter(request_id=request.pk, action="sql.executed").order_by("seq")
    ran = [line for line in request.plan if not line.startswith("DROP INDEX CONCURRENTLY IF EXISTS")]
    assert len(ran) == len(request.plan) - 1
    assert list(executed.values_list("statement", flat=True)) == ran
    assert all(event.approvers == ["bob"] for event in executed)


def test_drop_table_is_rated_high(payments_schema, api_for):
    response = api_for("alice").post("/api/v1/requests/", ddl_body(payments_schema["schema"],
                                                                   "DROP TABLE IF EXISTS invoices"), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["risk"] == "high"
    assert body["findings"][0]["rule"] == "ddl.drop_table" and body["findings"][0]["severity"] == "high"
    assert any(reason.startswith("ddl.drop_table:") for reason in body["risk_reasons"])
    assert body["review"]["approvals_required"] == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("CREATE TABL invoices (id int)", 'syntax error at or near "TABL" (position 8 / line 1 col 8)'),
    ("CREATE ROLE mallory SUPERUSER", "[scope.roles] roles are managed through role requests"),
    ("CREATE TABLE analytics_x.t (id int PRIMARY KEY)", "[scope.other_schema]"),
    ('CREATE TABLE "Invoices" (id int PRIMARY KEY)', "[ddl.naming]"),
])
def test_bad_sql_is_refused_at_submit_with_a_clear_message(payments_schema, api_for, text, expected):
    before = ChangeRequest.objects.count()
    response = api_for("alice").post("/api/v1/requests/", ddl_body(payments_schema["schema"], text), format="json")
    assert response.status_code == 400, response.json()
    messages = response.json()["errors"]["payload.sql"]
    assert any(expected in message for message in messages), messages
    assert ChangeRequest.objects.count() == before


def test_dry_run_errors_reach_the_reviewer(payments_schema, api_for):
    response = api_for("alice").post("/api/v1/requests/", {**ddl_body(
        payments_schema["schema"], "CREATE TABLE a (id int PRIMARY KEY); ALTER TABLE a ALTER COLUMN nope TYPE bigint"),
        "dry_run_override": "the column is added by a migration first"}, format="json")
    assert response.status_code == 201, response.json()
    dry = response.json()["dry_run"]
    assert dry["ok"] is False and dry["statement_index"] == 2 and dry["sqlstate"] == "42703"
    assert dry["override"] == {"reason": "the column is added by a migration first", "by": "alice"}
    detail = api_for("bob").get(f"/api/v1/requests/{response.json()['id']}/").json()
    assert detail["dry_run"] == dry


def test_another_teams_schema_is_refused(payments_schema, api_for):
    response = api_for("dave").post("/api/v1/requests/", {**ddl_body(payments_schema["schema"], "DROP TABLE t"),
                                                          "team": "analytics"}, format="json")
    assert response.status_code == 400
    assert "payload.schema" in response.json()["errors"]


def test_reviewer_sees_findings_and_the_failed_dry_run_on_the_request_page(payments_schema, api_for, web_for):
    response = api_for("alice").post("/api/v1/requests/", {**ddl_body(
        payments_schema["schema"], "CREATE TABLE b (x int); ALTER TABLE b ALTER COLUMN nope TYPE bigint"),
        "dry_run_override": "reviewers should see this"}, format="json")
    assert response.status_code == 201, response.json()
    request_id = response.json()["id"]
    page = web_for("bob").get(f"/requests/{request_id}/").content.decode()
    assert "ddl.table_without_primary_key" in page
    assert "Dry run" in page and "failed" in page and "at statement 2" in page
    assert "undefined_column (SQLSTATE 42703)" in page and "does not exist" not in page
    queue = web_for("bob").get("/reviews/").content.decode()
    assert "at statement 2" in queue


def _ddl_form(instance, schema: str, text: str) -> dict:
    return {"instance": instance.pk, "team": Team.objects.get(name="payments").pk, "justification": "invoices",
            "database": "app", "schema": schema, "sql": text}


def test_ddl_through_the_pages_previews_findings_and_refuses_a_syntax_error_inline(
    payments_schema, web_for, managed_instance
):
    from django.urls import reverse

    schema = payments_schema["schema"]
    alice = web_for("alice")
    # the live preview shows the plan, the risk and the rule findings
    preview = alice.post(reverse("request-preview", args=["ddl"]),
                         _ddl_form(managed_instance, schema, "CREATE TABLE notes (body text)"),
                         HTTP_HX_REQUEST="true").content.decode()
    assert 'id="preview-result"' in preview and "SET LOCAL ROLE" in preview
    assert "ddl.table_without_primary_key" in preview
    # a syntax error is shown next to the SQL field, with the input kept
    response = alice.post(reverse("request-new-form", args=["ddl"]),
                          _ddl_form(managed_instance, schema, "CREATE TABL notes (body text)"))
    html = response.content.decode()
    assert response.status_code == 400
    assert "syntax error at or near &quot;TABL&quot; (position 8 / line 1 col 8)" in html
    assert "CREATE TABL notes (body text)" in html
    # a good one is submitted and lands on its page with its dry run
    response = alice.post(reverse("request-new-form", args=["ddl"]),
                          _ddl_form(managed_instance, schema, "CREATE TABLE notes (id int PRIMARY KEY, body text)"))
    assert response.status_code == 302, response.content.decode()[:2000]
    page = alice.get(response["Location"]).content.decode()
    assert "Dry run" in page and "passed" in page
