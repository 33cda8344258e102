"""Access as code over the API (#22): plan and apply a team's desired state as one change set,
idempotently; my access; long-polling a request. Real database; the CLI journey with a worker and
a cluster is tests/e2e_api/test_cli.py."""

from __future__ import annotations

import time
from html import unescape

import pytest

from audit.models import AuditEvent
from portal.models import ChangeRequest, ChangeSet, Grant

DOC = {
    "version": 1, "instance": "demo", "team": "payments",
    "schemas": [{"database": "app", "name": "ledger"}],
    "roles": [{"name": "ledger_app", "login": True}],
    "grants": [{"role": "ledger_app", "database": "app", "schema": "ledger", "privileges": ["select", "INSERT"]}],
}


def test_plan_lists_the_requests_and_writes_nothing(api_for, managed_instance):
    answer = api_for("alice").post("/api/v1/change-sets/plan/", {"document": DOC}, format="json")
    assert answer.status_code == 200, answer.json()
    changes = [(c["op"], c["type"]) for c in answer.json()["changes"]]
    assert changes == [("add", "schema"), ("add", "role"), ("wait", "grant")]
    assert "apply again" in answer.json()["changes"][2]["reason"]
    grant = answer.json()["changes"][2]["payload"]
    assert grant["privileges"] == ["INSERT", "SELECT"] and grant["tables"] == "all"
    assert not ChangeRequest.objects.exists() and not ChangeSet.objects.exists()


def test_apply_files_one_change_set_and_a_second_apply_files_nothing(api_for, managed_instance):
    alice = api_for("alice")
    first = alice.post("/api/v1/change-sets/", {"document": DOC, "justification": "ledger service",
                                                "source": "payments.yaml"}, format="json")
    assert first.status_code == 201, first.json()
    body = first.json()
    assert [r["type"] for r in body["requests"]] == ["schema", "role"]
    assert all(r["status"] == "submitted" for r in body["requests"])
    change_set = ChangeSet.objects.get(pk=body["id"])
    assert change_set.items.count() == 2 and change_set.source == "payments.yaml"
    assert AuditEvent.objects.filter(action="change_set.filed", object_id=str(change_set.pk)).count() == 1
    assert AuditEvent.objects.filter(action="request.submitted").count() == 2

    # the requests are open: they count as done, nothing is filed twice
    again = alice.post("/api/v1/change-sets/", {"document": DOC, "justification": "again"}, format="json")
    assert again.status_code == 200, again.json()
    assert again.json()["id"] is None and again.json()["requests"] == []
    assert {c["op"] for c in again.json()["changes"]} == {"keep", "wait"}
    assert ChangeRequest.objects.count() == 2


def test_a_refused_entry_files_nothing_and_names_the_entry(api_for, managed_instance):
    # the schema (changes[0]) is fine, the role (changes[1]) is refused by its plan: neither is filed
    bad = {**DOC, "roles": [{"name": "pg_sneaky", "login": True}]}
    answer = api_for("alice").post("/api/v1/change-sets/", {"document": bad, "justification": "x"}, format="json")
    assert answer.status_code == 400
    assert "changes[1].payload.name" in answer.json()["errors"], answer.json()
    assert not ChangeRequest.objects.exists() and not ChangeSet.objects.exists()


@pytest.mark.parametrize(("document", "field"), [
    ({**DOC, "team": "analytics"}, "team"),  # not alice's team
    ({**DOC, "instance": "nope"}, "instance"),
    ({**DOC, "grants": [{"role": "x", "database": "app", "schema": "s"}]}, "grants[0].privileges"),
    ({**DOC, "grants": [{**DOC["grants"][0], "tables": 5}]}, "grants[0].tables"),
    ({**DOC, "roles": [{"name": "r", "superuser": True}]}, "roles[0].superuser"),
    ({**DOC, "version": 2}, "version"),
    ({**DOC, "grants": [DOC["grants"][0], DOC["grants"][0]]}, "grants[1]"),
])
def test_bad_documents_are_refused_naming_the_field(api_for, managed_instance, document, field):
    answer = api_for("alice").post("/api/v1/change-sets/plan/", {"document": document}, format="json")
    assert answer.status_code == 400
    assert field in answer.json()["errors"], answer.json()


def test_a_reviewer_approves_the_set_together_and_the_requester_cannot(api_for, managed_instance, people):
    filed = api_for("alice").post("/api/v1/change-sets/", {"document": DOC, "justification": "ledger"},
                                  format="json").json()
    own = api_for("alice").post(f"/api/v1/change-sets/{filed['id']}/approve/", {"comment": "mine"}, format="json")
    assert own.status_code == 403
    assert not ChangeRequest.objects.exclude(status="submitted").exists()  # all or nothing

    approved = api_for("bob").post(f"/api/v1/change-sets/{filed['id']}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200, approved.json()
    assert {r["status"] for r in approved.json()["requests"]} == {"queued"}
    # each request has its own approval on its own plan hash
    for request in ChangeRequest.objects.all():
        assert request.approvals.get().plan_hash == request.plan_hash
    assert api_for("bob").post(f"/api/v1/change-sets/{filed['id']}/approve/", {}, format="json").status_code == 409
    # dave (another team, no reviewer) does not see it
    assert api_for("dave").get(f"/api/v1/change-sets/{filed['id']}/").status_code == 404


def test_a_grant_held_and_no_longer_declared_is_revoked(api_for, managed_instance, people):
    payments = people["alice"].memberships.get().team
    Grant.objects.create(instance=managed_instance, database="app", schema="ledger", role="ledger_app",
                         privileges=["SELECT", "INSERT"], tables="all", team=payments)
    narrower = {**DOC, "schemas": [], "roles": [], "grants": [{**DOC["grants"][0], "privileges": ["SELECT"]}]}
    changes = api_for("alice").post("/api/v1/change-sets/plan/", {"document": narrower}, format="json").json()
    assert [(c["op"], c["type"], c["payload"]["privileges"]) for c in changes["changes"]] == [
        ("remove", "revoke", ["INSERT"])]
    nothing = {**narrower, "grants": []}
    changes = api_for("alice").post("/api/v1/change-sets/plan/", {"document": nothing}, format="json").json()
    assert [(c["op"], c["payload"]["privileges"]) for c in changes["changes"]] == [("remove", ["INSERT", "SELECT"])]


def test_my_access_lists_only_my_teams(api_for, managed_instance, people):
    payments = people["alice"].memberships.get().team
    Grant.objects.create(instance=managed_instance, database="app", schema="ledger", role="ledger_app",
                         privileges=["SELECT"], tables="all", team=payments)
    mine = api_for("alice").get("/api/v1/access/").json()
    assert [g["role"] for g in mine["grants"]] == ["ledger_app"] and mine["teams"] == ["payments"]
    assert api_for("dave").get("/api/v1/access/").json()["grants"] == []
    assert api_for("dave").get("/api/v1/access/?team=payments").status_code == 400


def test_wait_holds_the_answer_until_the_status_changes_or_time_is_up(api_for, managed_instance):
    created = api_for("alice").post("/api/v1/requests/", {
        "type": "role", "instance": "demo", "team": "payments", "justification": "x",
        "payload": {"name": "waiter", "login": False}}, format="json").json()
    began = time.monotonic()
    held = api_for("alice").get(f"/api/v1/requests/{created['id']}/?wait=1&status=submitted")
    assert held.status_code == 200 and held.json()["status"] == "submitted"
    assert time.monotonic() - began >= 0.9
    began = time.monotonic()
    changed = api_for("alice").get(f"/api/v1/requests/{created['id']}/?wait=5&status=queued")
    assert changed.json()["status"] == "submitted" and time.monotonic() - began < 2
    assert api_for("alice").get(f"/api/v1/requests/{created['id']}/?wait=99&status=submitted").status_code == 400
    no_status = api_for("alice").get(f"/api/v1/requests/{created['id']}/?wait=1")
    assert no_status.status_code == 400 and "status" in no_status.json()["errors"]
    assert api_for("dave").get(f"/api/v1/requests/{created['id']}/?wait=1&status=submitted").status_code == 404


def test_the_change_set_page_shows_the_set_and_a_reviewer_approves_it_all(api_for, web_for, managed_instance,
                                                                          django_assert_max_num_queries):
    filed = api_for("alice").post("/api/v1/change-sets/", {"document": DOC, "justification": "ledger"},
                                  format="json").json()
    page = web_for("alice").get(f"/change-sets/{filed['id']}/")
    assert page.status_code == 200
    text = unescape(page.content.decode())  # the plan's copyable text, as the reviewer reads it
    assert 'CREATE SCHEMA "ledger"' in text and "Approve all" not in text  # alice is no reviewer
    assert web_for("alice").post(f"/change-sets/{filed['id']}/approve/").status_code == 403

    reviewer = web_for("bob")
    with django_assert_max_num_queries(25):
        assert "Approve all 2" in reviewer.get(f"/change-sets/{filed['id']}/").content.decode()
    done = reviewer.post(f"/change-sets/{filed['id']}/approve/", {"comment": "ok"}, follow=True)
    assert "every open request approved" in done.content.decode()
    assert set(ChangeRequest.objects.values_list("status", flat=True)) == {"queued"}
    assert f"/change-sets/{filed['id']}/" in reviewer.get("/change-sets/").content.decode()
    assert web_for("dave").get(f"/change-sets/{filed['id']}/").status_code == 404


def test_a_request_of_a_change_set_links_to_it(api_for, web_for, managed_instance):
    filed = api_for("alice").post("/api/v1/change-sets/", {"document": DOC, "justification": "ledger"},
                                  format="json").json()
    request_id = filed["requests"][0]["id"]
    page = web_for("alice").get(f"/requests/{request_id}/").content.decode()
    assert f'href="/change-sets/{filed["id"]}/"' in page
    alone = api_for("alice").post("/api/v1/requests/", {
        "type": "role", "instance": "demo", "team": "payments", "justification": "x",
        "payload": {"name": "not_in_a_set", "login": False}}, format="json").json()
    assert "change set #" not in web_for("alice").get(f"/requests/{alone['id']}/").content.decode()
