"""The audit API: who may call it, filters and keyset pages, exports that parse back, the PDF."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pypdf import PdfReader

from audit.chainer import ensure_chained
from audit.models import AuditEvent
from tests.audit.world import SECRET, build_world

AUDIT_ENDPOINTS = [
    "/api/v1/audit/events/",
    "/api/v1/audit/events/1/",
    "/api/v1/audit/export/?format=csv",
    "/api/v1/audit/export/?format=jsonl",
    "/api/v1/audit/export/?format=pdf",
    "/api/v1/audit/verify/",
]
ENTITLEMENTS = "/api/v1/entitlements/?at=2026-01-01"

# persona x endpoint x expected status: every audit endpoint has a row here.
MATRIX = (
    [(user, path, 403) for user in ("alice", "dave", "bob") for path in AUDIT_ENDPOINTS]
    + [(user, path, 200) for user in ("carol", "admin") for path in AUDIT_ENDPOINTS]
    + [("alice", ENTITLEMENTS, 403), ("dave", ENTITLEMENTS, 403), ("bob", ENTITLEMENTS, 200),
       ("carol", ENTITLEMENTS, 200), ("admin", ENTITLEMENTS, 200)]
)


def _body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


@pytest.mark.parametrize("username,path,expected", MATRIX)
def test_permission_matrix(people, api_for, username, path, expected):
    build_world(people) if username in ("carol", "admin") else None
    response = api_for(username).get(path)
    _body(response)
    assert response.status_code == expected, (username, path)
    if expected == 403:
        assert set(response.json()) == {"detail", "errors"}


@pytest.mark.parametrize("path", AUDIT_ENDPOINTS + [ENTITLEMENTS])
def test_anonymous_is_refused(db, client, path):
    assert client.get(path).status_code in (401, 403)


def test_requesters_see_nothing_of_the_log_and_leave_no_export_event(people, api_for):
    before = AuditEvent.objects.filter(action="audit.exported").count()
    for path in AUDIT_ENDPOINTS:
        assert api_for("alice").get(path).status_code == 403
    assert AuditEvent.objects.filter(action="audit.exported").count() == before


def test_carol_reads_the_events_of_alices_request(people, api_for):
    world = build_world(people)
    response = api_for("carol").get(f"/api/v1/audit/events/?request={world.grant_request.pk}")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [e["action"] for e in results] == ["request.submitted", "request.approved", "sql.executed",
                                              "sql.executed", "request.applied"]
    assert [e["actor"] for e in results][:2] == ["alice", "bob"]
    assert results[0]["actor_ip"] == "10.1.2.3"
    assert results[2]["statement"].startswith("GRANT USAGE ON SCHEMA public")
    assert response.json()["next"] is None
    one = api_for("carol").get(f"/api/v1/audit/events/{results[0]['seq']}/").json()
    assert one["hash"] == results[0]["hash"] and len(one["prev_hash"]) == 64


def test_keyset_pages_follow_next_to_the_end(people, api_for, django_assert_max_num_queries):
    world = build_world(people)
    expected = list(AuditEvent.objects.filter(request_id__in=world.request_ids).order_by("seq")
                    .values_list("seq", flat=True))
    url = "/api/v1/audit/events/?actor=system&page_size=3&since=2000-01-01&action=sql.*"
    seen = []
    client = api_for("carol")
    while url:
        ensure_chained()  # what the commit of the last page's read does outside a test's transaction
        # the page (auth, the chainer's probe for pending events, events) and the read recorded as
        # audit.viewed (one insert)
        with django_assert_max_num_queries(6):
            body = client.get(url).json()
        seen += [e["seq"] for e in body["results"]]
        url = body["next"]
    mine = [s for s in seen if s in expected]
    assert mine == [s for s in expected if AuditEvent.objects.get(seq=s).action == "sql.executed"]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@pytest.mark.parametrize("param,value", [("since", "yesterday"), ("until", "2026-13-01"), ("request", "abc"),
                                         ("action", "DROP TABLE"), ("after", "-1"), ("page_size", "0")])
def test_bad_filters_are_a_400_naming_the_field(people, api_for, param, value):
    response = api_for("carol").get("/api/v1/audit/events/", {param: value})
    assert response.status_code == 400
    assert param in response.json()["errors"]


def test_bad_export_format_is_a_400(people, api_for):
    response = api_for("carol").get("/api/v1/audit/export/?format=xml")
    assert response.status_code == 400 and "format" in response.json()["errors"]


def _orm_rows(request_ids):
    return list(AuditEvent.objects.filter(request_id__in=request_ids).order_by("seq"))


def test_csv_export_parses_back_to_the_same_events(people, api_for):
    world = build_world(people)
    response = api_for("carol").get(f"/api/v1/audit/export/?format=csv&request={world.grant_request.pk}"
                                    "&since=2000-01-01&until=2999-12-31")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="audit_2000-01-01_2999-12-31.csv"'
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    events = _orm_rows([world.grant_request.pk])
    assert [int(r["seq"]) for r in rows] == [e.seq for e in events]
    for row, event in zip(rows, events, strict=True):
        assert row["actor"] == event.actor and row["action"] == event.action
        assert row["statement"] == event.statement and row["hash"] == event.hash
        assert json.loads(row["details"]) == event.details and json.loads(row["approvers"]) == event.approvers
        assert row["ts"] == event.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert (row["actor_ip"] or None) == event.actor_ip
    exported = AuditEvent.objects.filter(action="audit.exported").order_by("-seq").first()
    assert exported.actor == "carol" and exported.details["format"] == "csv"
    assert exported.details["filters"]["request"] == str(world.grant_request.pk)


def test_jsonl_export_parses_back_and_rechains(people, api_for):
    from audit import keys

    world = build_world(people)
    response = api_for("admin").get(f"/api/v1/audit/export/?format=jsonl&request={world.role_request.pk}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    lines = _body(response).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    events = _orm_rows([world.role_request.pk])
    assert [r["seq"] for r in rows] == [e.seq for e in events]
    for row, event in zip(rows, events, strict=True):
        assert row["details"] == event.details and row["statement"] == event.statement
        # the export and the audit key are enough to recompute each event's hash (docs/audit.md)
        assert row["key_id"] == event.key_id == keys.current().id
        assert row["chain_format"] == event.chain_format == 2
        assert keys.seal_event(keys.by_id(row["key_id"]), row) == row["hash"] == event.hash


def test_no_password_appears_in_any_export(people, api_for):
    world = build_world(people)
    assert AuditEvent.objects.filter(request_id=world.role_request.pk, action="secret.revealed").exists()
    client = api_for("carol")
    for export_format in ("csv", "jsonl"):
        body = _body(client.get(f"/api/v1/audit/export/?format={export_format}"))
        assert SECRET.encode() not in body
        assert b"PASSWORD '***'" in body
    pdf = _pdf_text(_body(client.get("/api/v1/audit/export/?format=pdf")))
    assert SECRET not in pdf


def _pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_report_opens_and_names_the_requests_of_the_period(people, api_for):
    world = build_world(people)
    response = api_for("carol").get("/api/v1/audit/export/?format=pdf&since=2000-01-01")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    content = _body(response)
    assert content.startswith(b"%PDF")
    text = _pdf_text(content)
    for request_id in world.request_ids:
        assert f"#{request_id}" in text
    assert "Audit compliance report" in text and "VERIFIED" in text
    assert "carol" in text  # the author
    assert "payments_svc" in text and "bob" in text  # the entitlement and its approver
    assert AuditEvent.objects.filter(action="audit.exported", actor="carol", details__format="pdf").exists()


def test_verify_endpoint_reports_the_chain_and_is_audited(people, api_for):
    build_world(people)
    body = api_for("carol").get("/api/v1/audit/verify/").json()
    assert body["ok"] is True and body["first_broken_seq"] is None
    assert body["events"] >= 10 and len(body["head_hash"]) == 64
    event = AuditEvent.objects.filter(action="audit.verified").order_by("-seq").first()
    assert event.actor == "carol" and event.details["head_hash"] == body["head_hash"]
