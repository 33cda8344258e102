"""API lists: the number of queries does not grow with the rows (1 row vs 20 rows)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.models import ChangeRequest, Team
from portal.services.requests import request_submit
from provisioning.models import DriftFinding


def submit_many(people, instance, count: int) -> None:
    payments = Team.objects.get(name="payments")
    start = ChangeRequest.objects.count()
    for index in range(count):
        request_submit(user=people["alice"], actor_ip=None, type="schema", instance=instance, team=payments,
                       justification="query count", payload={"database": "app", "name": f"qc_{start + index}"})


def file_many(people, instance, count: int) -> None:
    """System requests a reviewer filed by hand (drift revokes): the filer's name is on each row."""
    start = ChangeRequest.objects.order_by("-id").values_list("id", flat=True).first() or 0
    submit_many(people, instance, count)
    ChangeRequest.objects.filter(pk__gt=start).update(requester=None, filed_by=people["bob"])


def drift_many(instance, count: int) -> None:
    start = DriftFinding.objects.count()
    DriftFinding.objects.bulk_create(
        DriftFinding(instance=instance, database="app", kind="unexpected_privilege", role=f"r{start + i}",
                     object_type="schema", object_name="s", privilege="USAGE") for i in range(count))


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(captured)


LISTS = [
    ("alice", "/api/v1/requests/", submit_many),
    ("bob", "/api/v1/requests/?status=submitted", submit_many),
    ("admin", "/api/v1/requests/?type=schema", file_many),
    ("bob", "/api/v1/drift/", lambda people, instance, n: drift_many(instance, n)),
    ("carol", "/api/v1/audit/events/", submit_many),
]


@pytest.mark.parametrize(("persona", "url", "grow"), LISTS, ids=[url for _, url, _ in LISTS])
def test_list_queries_do_not_grow_with_rows(people, api_for, managed_instance, persona, url, grow,
                                            django_assert_max_num_queries):
    client = api_for(persona)
    grow(people, managed_instance, 1)
    with_one = queries_for(client, url)
    grow(people, managed_instance, 19)
    with django_assert_max_num_queries(with_one):
        client.get(url)


# --- the endpoints of the load test (bench/load.py): fixed numbers, lower them when you can -------

def test_hot_endpoints_query_pins(people, api_for, managed_instance, django_assert_max_num_queries):
    """Token and groups (1), then: list = count + page; detail = row + approvals + executions +
    policy (+ the approvers' groups); approve = the transition and the detail answer."""
    submit_many(people, managed_instance, 5)
    alice, bob = api_for("alice"), api_for("bob")
    newest = list(ChangeRequest.objects.order_by("-id").values_list("id", flat=True)[:2])
    with django_assert_max_num_queries(3):
        assert alice.get("/api/v1/requests/").status_code == 200
    with django_assert_max_num_queries(3):
        assert bob.get("/api/v1/requests/?status=submitted&page_size=20").status_code == 200
    with django_assert_max_num_queries(3):
        assert alice.get("/api/v1/instances/").status_code == 200
    with django_assert_max_num_queries(5):
        assert alice.get(f"/api/v1/requests/{newest[0]}/").status_code == 200
    with django_assert_max_num_queries(PINS["approve"]):
        assert bob.post(f"/api/v1/requests/{newest[1]}/approve/", {"comment": "ok"}, format="json").status_code == 200
    with django_assert_max_num_queries(6):  # now with an approval: its reviewers' groups, one query
        assert alice.get(f"/api/v1/requests/{newest[1]}/").status_code == 200
    file_many(people, managed_instance, 1)
    filed = ChangeRequest.objects.order_by("-id").values_list("id", flat=True).first()
    with django_assert_max_num_queries(4):  # the filer's name and the policy come with the row
        assert bob.get(f"/api/v1/requests/{filed}/").json()["filed_by"] == "bob"
    body = {"type": "schema", "instance": "demo", "team": "payments", "justification": "pins",
            "payload": {"database": "app", "name": f"qc_pin_{newest[0]}"}}
    with django_assert_max_num_queries(PINS["submit"]):
        assert alice.post("/api/v1/requests/", body, format="json").status_code == 201


# approve: the row read and locked within the reviewer's scope with its eligibility and its policy
# (one SELECT), approval, its approvals (the tally's and the answer's), submitted -> queued (one UPDATE) + outbox,
# the audit events in one append (the savepoint and its release are the transaction's BEGIN and
# COMMIT outside tests); a request that waited for a decision never ran: no executions to read.
# submit: scope of team and instance (the membership came with the token), inventory (one read),
# validation (roles, schemas), policy, insert + the name reservations (one INSERT ... ON CONFLICT) +
# audit; the answer is built from the new row.
PINS = {"approve": 9, "submit": 12}


def test_transition_answers_equal_a_fresh_read(people, api_for, managed_instance):
    """Submit and approve answer with the row as the service wrote it, not read back: it must
    be exactly what a GET of the request answers right after (no worker runs here)."""
    alice, bob = api_for("alice"), api_for("bob")
    body = {"type": "schema", "instance": "demo", "team": "payments", "justification": "fresh read",
            "payload": {"database": "app", "name": "qc_fresh_read", "owner_role": "qc_fresh_owner"}}
    submitted = alice.post("/api/v1/requests/", body, format="json")
    assert submitted.status_code == 201, submitted.json()
    request_id = submitted.json()["id"]
    assert submitted.json() == alice.get(f"/api/v1/requests/{request_id}/").json()
    approved = bob.post(f"/api/v1/requests/{request_id}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200, approved.json()
    assert approved.json()["status"] == "queued" and approved.json()["approvals"][0]["reviewer"] == "bob"
    assert approved.json() == bob.get(f"/api/v1/requests/{request_id}/").json()
