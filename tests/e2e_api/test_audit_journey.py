"""Issue 6's journey: carol audits what alice asked for and bob approved, after a real worker
applied it on the real cluster: the request's events, the chain, the month's CSV, JSON Lines and
PDF, and alice's role in the entitlements with bob as approver."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from pypdf import PdfReader

from audit.models import AuditEvent
from tests.e2e_api.test_journey import submit_and_approve

pytestmark = pytest.mark.slow
SCHEMA, ROLE = "ledger_app", "ledger_svc"


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_carol_audits_alices_access(transactional_db, people, api_for, managed_cluster, managed_instance,
                                    celery_worker, wait_for_status):
    common = {"instance": "demo", "team": "payments"}
    schema = submit_and_approve(api_for, wait_for_status, {
        **common, "type": "schema", "justification": "ledger data", "payload": {"database": "app", "name": SCHEMA}})
    role = submit_and_approve(api_for, wait_for_status, {
        **common, "type": "role", "justification": "the ledger service logs in", "payload": {"name": ROLE, "login": True}})
    grant = submit_and_approve(api_for, wait_for_status, {
        **common, "type": "grant", "justification": "the service reads the ledger",
        "payload": {"role": ROLE, "database": "app", "schema": SCHEMA, "privileges": ["SELECT"],
                    "default_privileges": False}})
    carol = api_for("carol")

    # the events of alice's grant request: who did what, in order, with the statements that ran
    events = carol.get(f"/api/v1/audit/events/?request={grant['id']}").json()["results"]
    actions = [(e["action"], e["actor"]) for e in events]
    assert actions[0] == ("request.submitted", "alice")
    assert ("request.approved", "bob") in actions
    assert actions[-1] == ("request.applied", "system")
    executed = [e["statement"] for e in events if e["action"] == "sql.executed"]
    assert executed == grant["plan"]
    assert all(e["approvers"] == ["bob"] for e in events if e["action"] == "sql.executed")

    # the chain verifies
    verified = carol.get("/api/v1/audit/verify/").json()
    assert verified["ok"] is True, verified

    # the month's exports name the requests; no password anywhere
    month = {"since": datetime.now(UTC).date().replace(day=1).isoformat(), "until": datetime.now(UTC).date().isoformat()}
    rows = list(csv.DictReader(io.StringIO(_body(carol.get("/api/v1/audit/export/", {**month, "format": "csv"})).decode())))
    lines = [json.loads(line) for line in _body(carol.get("/api/v1/audit/export/", {**month, "format": "jsonl"}))
             .decode().splitlines()]
    ids = {schema["id"], role["id"], grant["id"]}
    assert ids <= {int(r["request_id"]) for r in rows if r["request_id"]}
    assert ids <= {line["request_id"] for line in lines}
    # the JSON Lines export also holds the audit.exported event of the CSV download before it
    assert [int(r["seq"]) for r in rows] == [line["seq"] for line in lines][: len(rows)]
    assert lines[len(rows)]["action"] == "audit.exported"
    assert all("PASSWORD '" not in r["statement"] or "PASSWORD '***'" in r["statement"] for r in rows)
    pdf = carol.get("/api/v1/audit/export/", {**month, "format": "pdf"})
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(_body(pdf))).pages)
    for request_id in ids:
        assert f"#{request_id}" in text
    assert "VERIFIED" in text and ROLE in text
    assert AuditEvent.objects.filter(action="audit.exported", actor="carol").count() >= 3

    # alice's role in the live entitlements, explained by her request, approved by bob
    body = carol.get("/api/v1/entitlements/", {"instance": "demo", "role": ROLE}).json()
    assert body["unreachable"] == {}
    found = {(r["schema"], r["kind"]): r for r in body["results"]}
    select = found[(SCHEMA, "tables")] if (SCHEMA, "tables") in found else None
    usage = found[(SCHEMA, "schema")]
    assert usage["privileges"] == ["USAGE"] and not usage["unexplained"]
    assert usage["request_id"] == grant["id"] and usage["requester"] == "alice" and usage["approvers"] == ["bob"]
    if select is not None:  # tables exist only if someone created one; then SELECT is explained too
        assert not select["unexplained"] and select["approvers"] == ["bob"]


@pytest.fixture(autouse=True)
def _drop_objects(managed_cluster):
    yield
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        for name in (ROLE, f"{SCHEMA}_owner"):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {r}").format(r=sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {r}").format(r=sql.Identifier(name)))
