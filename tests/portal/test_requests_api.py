"""Requests over the API: submit, validation, lifecycle, separation of duties, scope, filters."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from audit.models import AuditEvent
from portal.models import ApprovalPolicy, ChangeRequest, Team
from portal.services.demo import membership_add
from portal.services.requests import request_submit
from provisioning.models import OutboxMessage
from provisioning.plans import plan_hash
from tests.portal.requests_helpers import apply_for_test, schema_body, unique


@pytest.fixture
def world(people, managed_instance):
    return {"instance": managed_instance, "payments": Team.objects.get(name="payments"),
            "analytics": Team.objects.get(name="analytics"), **people}


def submit(api_for, who: str = "alice", **overrides):
    response = api_for(who).post("/api/v1/requests/", schema_body(**overrides), format="json")
    return response


def actions(request_id: int) -> list[str]:
    return list(AuditEvent.objects.filter(request_id=request_id).order_by("seq").values_list("action", flat=True))


def test_alice_submits_a_schema_request_and_reads_its_exact_plan(world, api_for):
    name = unique("sch")
    response = submit(api_for, payload={"database": "app", "name": name})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "submitted"
    assert body["risk"] == "low"
    assert body["plan"][-1] == f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}_owner"'
    assert body["plan_hash"] == plan_hash(body["plan"])
    assert body["payload"] == {"database": "app", "name": name, "owner_role": f"{name}_owner",
                               "create_owner_role": True}
    assert body["review"]["approvals_required"] == 1
    assert body["review"]["can_decide"] is False
    assert body["requester"] == "alice" and body["team"] == "payments" and body["instance"] == "demo"
    event = AuditEvent.objects.get(request_id=body["id"], action="request.submitted")
    assert event.actor == "alice" and event.actor_ip == "127.0.0.1" and event.details["plan_hash"] == body["plan_hash"]


def test_team_and_instance_may_be_given_by_id(world, api_for):
    response = submit(api_for, team=world["payments"].pk, instance=str(world["instance"].pk))
    assert response.status_code == 201, response.json()
    assert response.json()["team"] == "payments"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"payload": {"database": "app", "name": "Bad-Name"}}, "payload.name"),
    ({"payload": {"database": "app", "name": "select"}}, "payload.name"),
    ({"payload": {"database": "app", "name": "pg_x"}}, "payload.name"),
    ({"payload": {"database": "app", "name": "x" * 64}}, "payload.name"),
    ({"payload": {"database": "app", "name": "ok_name", "superuser": True}}, "payload.superuser"),
    ({"payload": {"database": "nope", "name": "ok_name"}}, "payload.database"),
    ({"payload": {"name": "ok_name"}}, "payload.database"),
    ({"payload": "CREATE SCHEMA x"}, "payload"),
    ({"justification": ""}, "justification"),
    ({"justification": "   "}, "justification"),
    ({"type": "table"}, "type"),
    ({"team": "analytics"}, "team"),
    ({"team": "nope"}, "team"),
    ({"team": True}, "team"),
    ({"instance": "nope"}, "instance"),
    ({"instance": 999999}, "instance"),
])
def test_bad_input_is_a_400_naming_the_field(world, api_for, overrides, field):
    response = submit(api_for, **overrides)
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert response.json()["detail"]
    assert not ChangeRequest.objects.exists()


def test_missing_fields_are_named(world, api_for):
    response = api_for("alice").post("/api/v1/requests/", {}, format="json")
    assert response.status_code == 400
    assert {"type", "instance", "team", "payload"} <= set(response.json()["errors"])


def test_role_and_grant_rules_answer_400_through_the_api(world, api_for):
    role = submit(api_for, type="role", payload={"name": "svc", "login": True, "member_of": ["postgres"]})
    assert role.status_code == 400 and "payload.member_of" in role.json()["errors"]
    grant = submit(api_for, type="grant", payload={"role": "nobody", "database": "app", "schema": "public",
                                                   "privileges": ["SELECT", "DROP"]})
    assert grant.status_code == 400
    assert {"payload.role", "payload.schema", "payload.privileges"} <= set(grant.json()["errors"])


def test_a_reviewer_outside_the_team_cannot_submit_for_it(world, api_for):
    response = submit(api_for, "bob")
    assert response.status_code == 403
    assert "not a member" in response.json()["detail"]


def test_preview_shows_plan_and_risk_and_writes_nothing(world, api_for):
    body = schema_body()
    del body["justification"]
    response = api_for("alice").post("/api/v1/requests/preview/", body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["risk"] == "low" and len(response.json()["plan"]) == 5
    assert not ChangeRequest.objects.exists() and not AuditEvent.objects.filter(action__startswith="request.").exists()


def test_one_approval_from_a_reviewer_queues_the_request_with_its_outbox_row(world, api_for):
    request_id = submit(api_for).json()["id"]
    response = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {"comment": "fine"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "queued"
    assert body["approvals"][0]["reviewer"] == "bob" and body["approvals"][0]["current"] is True
    request = ChangeRequest.objects.get(pk=request_id)
    assert request.approved_at is not None
    message = OutboxMessage.objects.get(request=request)
    assert message.task_name == "provisioning.apply_request"
    assert message.args == {"request_id": request_id, "plan_hash": request.plan_hash}
    # one decision, one event: the approval that completes the policy is request.approved itself
    assert actions(request_id) == ["request.submitted", "request.approved", "request.queued"]
    approved = AuditEvent.objects.get(request_id=request_id, action="request.approved")
    assert approved.actor == "bob" and approved.approvers == ["bob"]
    # and it carries the reviewer's decision: the comment and the plan hash they approved
    assert approved.details["comment"] == "fine" and approved.details["plan_hash"] == request.plan_hash


def test_nobody_approves_their_own_request(world, api_for, people):
    membership_add(user=people["bob"], team=world["payments"])  # bob is a reviewer *and* in the team
    request_id = submit(api_for, "bob").json()["id"]
    response = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert response.status_code == 403
    assert "own request" in response.json()["detail"]
    admin_own = submit(api_for, "admin").json()["id"]
    assert api_for("admin").post(f"/api/v1/requests/{admin_own}/approve/", {}, format="json").status_code == 403
    assert ChangeRequest.objects.get(pk=request_id).status == "submitted"


@pytest.fixture
def two_approvals(world, people):
    ApprovalPolicy.objects.filter(environment="dev", request_type="schema", risk="low").update(approvals_required=2)
    erin = User.objects.create_user("erin", email="erin@example.test")
    erin.groups.add(Group.objects.get(name="reviewers"))
    people["erin"] = erin  # so api_for("erin") works
    return erin


def test_each_person_decides_once_and_approvals_are_counted_per_policy(world, api_for, two_approvals):
    request_id = submit(api_for).json()["id"]
    first = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert first.status_code == 200 and first.json()["status"] == "submitted"
    assert first.json()["review"]["approvals"] == 1
    again = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert again.status_code == 409 and "already decided" in again.json()["detail"]
    second = api_for("erin").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert second.status_code == 200 and second.json()["status"] == "queued"
    assert AuditEvent.objects.get(request_id=request_id, action="request.approved").approvers == ["bob", "erin"]


def test_approvals_bind_to_the_plan_hash_they_saw(world, api_for, two_approvals):
    request_id = submit(api_for).json()["id"]
    api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    # the plan is re-rendered (e.g. the payload was edited): bob's approval no longer counts
    request = ChangeRequest.objects.get(pk=request_id)
    request.plan = [*request.plan, "COMMENT ON SCHEMA x IS 'y'"]
    request.plan_hash = plan_hash(request.plan)
    request.save()
    response = api_for("erin").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "submitted"
    assert response.json()["review"]["approvals"] == 1
    assert [a["current"] for a in response.json()["approvals"]] == [False, True]
    assert api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").json()["status"] == "queued"


def test_a_tampered_plan_cannot_be_approved(world, api_for):
    request_id = submit(api_for).json()["id"]
    ChangeRequest.objects.filter(pk=request_id).update(plan=["DROP SCHEMA public CASCADE"])
    response = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert response.status_code == 409
    assert ChangeRequest.objects.get(pk=request_id).status == "submitted"


def test_a_reject_ends_the_request(world, api_for):
    request_id = submit(api_for).json()["id"]
    no_reason = api_for("bob").post(f"/api/v1/requests/{request_id}/reject/", {"comment": ""}, format="json")
    assert no_reason.status_code == 400 and "comment" in no_reason.json()["errors"]
    rejected = api_for("bob").post(f"/api/v1/requests/{request_id}/reject/", {"comment": "use the shared schema"},
                                   format="json")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert rejected.json()["status_detail"] == "use the shared schema"
    assert api_for("admin").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").status_code == 409
    assert api_for("alice").post(f"/api/v1/requests/{request_id}/cancel/", {}, format="json").status_code == 409
    assert actions(request_id) == ["request.submitted", "request.rejected"]
    assert not OutboxMessage.objects.exists()


def test_the_requester_may_cancel_until_approved_and_a_cancelled_request_cannot_be_approved(world, api_for):
    request_id = submit(api_for).json()["id"]
    assert api_for("bob").post(f"/api/v1/requests/{request_id}/cancel/", {}, format="json").status_code == 403
    cancelled = api_for("alice").post(f"/api/v1/requests/{request_id}/cancel/", {"comment": "not needed"},
                                      format="json")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    approve = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert approve.status_code == 409
    assert actions(request_id) == ["request.submitted", "request.cancelled"]

    queued_id = submit(api_for).json()["id"]
    api_for("bob").post(f"/api/v1/requests/{queued_id}/approve/", {}, format="json")
    assert api_for("alice").post(f"/api/v1/requests/{queued_id}/cancel/", {}, format="json").status_code == 409


def test_a_failed_request_is_retried_by_a_reviewer_only(world, api_for):
    request_id = submit(api_for).json()["id"]
    assert api_for("bob").post(f"/api/v1/requests/{request_id}/retry/", {}, format="json").status_code == 409
    api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    # what the executor does on a definite error
    ChangeRequest.objects.filter(pk=request_id).update(status="failed", status_detail="permission denied")
    assert api_for("alice").post(f"/api/v1/requests/{request_id}/retry/", {}, format="json").status_code == 403
    assert api_for("carol").post(f"/api/v1/requests/{request_id}/retry/", {}, format="json").status_code == 403
    retried = api_for("admin").post(f"/api/v1/requests/{request_id}/retry/", {"comment": "fixed"}, format="json")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert OutboxMessage.objects.filter(request_id=request_id).count() == 2
    assert actions(request_id)[-2:] == ["request.retried", "request.queued"]
    assert api_for("admin").post(f"/api/v1/requests/{request_id}/retry/", {}, format="json").status_code == 409


def test_an_auditor_reads_but_never_decides(world, api_for):
    request_id = submit(api_for).json()["id"]
    assert api_for("carol").get(f"/api/v1/requests/{request_id}/").status_code == 200
    response = api_for("carol").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json")
    assert response.status_code == 403
    assert api_for("carol").post(f"/api/v1/requests/{request_id}/reject/", {"comment": "no"},
                                 format="json").status_code == 403


def test_dave_cannot_see_alices_requests(world, api_for):
    request_id = submit(api_for).json()["id"]
    dave = api_for("dave")
    assert dave.get("/api/v1/requests/").json()["results"] == []
    for path in ["", "approve/", "reject/", "cancel/", "retry/"]:
        response = dave.get(f"/api/v1/requests/{request_id}/") if not path else dave.post(
            f"/api/v1/requests/{request_id}/{path}", {"comment": "x"}, format="json")
        assert response.status_code == 404, path
    assert dave.get("/api/v1/requests/?team=payments").json()["results"] == []


def test_filters_by_status_type_team_and_instance_by_id_or_name(world, api_for):
    first = submit(api_for).json()["id"]
    second = submit(api_for).json()["id"]
    api_for("alice").post(f"/api/v1/requests/{second}/cancel/", {}, format="json")
    bob = api_for("bob")

    def ids(query: str) -> list[int]:
        response = bob.get(f"/api/v1/requests/{query}")
        assert response.status_code == 200, response.json()
        return [r["id"] for r in response.json()["results"]]

    assert ids("") == [second, first]
    assert ids("?status=submitted") == [first]
    assert ids("?status=cancelled&type=schema") == [second]
    assert ids("?type=grant") == []
    assert ids("?team=payments") == [second, first]
    assert ids(f"?team={world['payments'].pk}") == [second, first]
    assert ids("?team=analytics") == []
    assert ids(f"?instance=demo&instance={world['instance'].pk}") == [second, first]
    bad = bob.get("/api/v1/requests/?status=sleeping")
    assert bad.status_code == 400 and "status" in bad.json()["errors"]


def test_list_query_count_does_not_grow_with_the_number_of_requests(world, api_for, django_assert_max_num_queries):
    for _ in range(3):
        request_submit(user=world["alice"], actor_ip=None, type="schema", instance=world["instance"],
                       team=world["payments"], justification="x", payload={"database": "app", "name": unique("s")})
    bob = api_for("bob")
    with django_assert_max_num_queries(6):
        assert len(bob.get("/api/v1/requests/").json()["results"]) == 3
    for _ in range(12):
        request_submit(user=world["alice"], actor_ip=None, type="schema", instance=world["instance"],
                       team=world["payments"], justification="x", payload={"database": "app", "name": unique("s")})
    with django_assert_max_num_queries(6):
        assert len(bob.get("/api/v1/requests/?team=payments&status=submitted").json()["results"]) == 15
    alice = api_for("alice")
    with django_assert_max_num_queries(6):
        assert len(alice.get("/api/v1/requests/").json()["results"]) == 15


def test_auto_approval_only_for_low_risk_dev_when_the_policy_says_so(world, api_for):
    ApprovalPolicy.objects.filter(environment="dev", request_type="schema", risk="low").update(auto_approve=True)
    body = submit(api_for).json()
    assert body["status"] == "queued"
    approved = AuditEvent.objects.get(request_id=body["id"], action="request.approved")
    assert approved.actor == "system" and approved.details["auto_approved"] is True
    # a login role is medium risk: never auto-approved (the database refuses the flag on medium rows)
    ApprovalPolicy.objects.filter(environment="dev", request_type="role", risk="low").update(auto_approve=True)
    role = submit(api_for, type="role", payload={"name": unique("svc"), "login": True}).json()
    assert role["risk"] == "medium" and role["status"] == "submitted"


def test_cross_team_read_needs_a_reviewer_and_the_owning_teams_lead(world, api_for, people):
    # given analytics owns a schema and payments has a role (both really on the cluster)
    schema = request_submit(user=people["dave"], actor_ip=None, type="schema", instance=world["instance"],
                            team=world["analytics"], justification="x",
                            payload={"database": "app", "name": unique("rep")})
    apply_for_test(schema)
    role = request_submit(user=people["alice"], actor_ip=None, type="role", instance=world["instance"],
                          team=world["payments"], justification="x", payload={"name": unique("rd"), "login": False})
    apply_for_test(role)
    # when alice asks to read analytics' schema
    response = submit(api_for, type="grant", payload={"role": role.payload["name"], "database": "app",
                                                      "schema": schema.payload["name"], "privileges": ["SELECT"]})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["owner_team"] == "analytics" and body["risk"] == "low"
    assert "access to another team's schema: its lead approves too" in body["risk_reasons"]
    assert body["review"]["requires_owner_lead"] is True
    # then the reviewer's approval is not enough
    after_bob = api_for("bob").post(f"/api/v1/requests/{body['id']}/approve/", {}, format="json").json()
    assert after_bob["status"] == "submitted" and after_bob["review"]["owner_lead_approved"] is False
    # and dave, analytics' lead, sees it and completes it
    assert api_for("dave").get(f"/api/v1/requests/{body['id']}/").status_code == 200
    after_dave = api_for("dave").post(f"/api/v1/requests/{body['id']}/approve/", {}, format="json")
    assert after_dave.status_code == 200, after_dave.json()
    assert after_dave.json()["status"] == "queued"
    assert AuditEvent.objects.get(request_id=body["id"], action="request.approved").approvers == ["bob", "dave"]


def test_cross_team_write_is_high_risk(world, api_for, people):
    schema = request_submit(user=people["dave"], actor_ip=None, type="schema", instance=world["instance"],
                            team=world["analytics"], justification="x",
                            payload={"database": "app", "name": unique("rep")})
    apply_for_test(schema)
    role = request_submit(user=people["alice"], actor_ip=None, type="role", instance=world["instance"],
                          team=world["payments"], justification="x", payload={"name": unique("wr"), "login": False})
    apply_for_test(role)
    body = submit(api_for, type="grant", payload={"role": role.payload["name"], "database": "app",
                                                  "schema": schema.payload["name"],
                                                  "privileges": ["SELECT", "INSERT"]}).json()
    assert body["risk"] == "high"
    assert body["review"]["approvals_required"] == 2


def test_an_unreachable_instance_is_a_400_and_is_not_dialled_again_at_once(world, api_for):
    from django.core.cache import cache

    from portal.models import Instance
    from provisioning.clusters import free_port

    down = Instance.objects.create(name="down", host="127.0.0.1", port=free_port(), admin_user="postgres")
    cache.delete(f"inventory-unreachable:{down.pk}")
    response = submit(api_for, instance="down")
    assert response.status_code == 400
    assert "inventory" in response.json()["detail"]
    assert cache.get(f"inventory-unreachable:{down.pk}") == 1
    assert submit(api_for, instance="down").status_code == 400
    cache.delete(f"inventory-unreachable:{down.pk}")


@pytest.mark.parametrize("path", ["/api/v1/requests/abc/", "/api/v1/requests/99999999999999999999/",
                                  "/api/v1/requests/-1/", "/api/v1/requests/1e3/"])
def test_a_request_id_that_is_not_one_is_a_404(world, api_for, path):
    response = api_for("bob").get(path)
    assert response.status_code == 404
    assert api_for("bob").post(path + "approve/", {}, format="json").status_code == 404


@pytest.mark.parametrize("query", ["team=99999999999999999999", "instance=99999999999999999999", "team=%00"])
def test_odd_filter_values_find_nothing_and_never_fail(world, api_for, query):
    submit(api_for)
    response = api_for("bob").get(f"/api/v1/requests/?{query}")
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json()["results"] == []


@pytest.mark.parametrize("payload", [
    {"role": "a", "database": ["x"], "schema": {"a": 1}, "privileges": [["x"], None, 5], "tables": [{"a": 1}],
     "expires_at": "2030-13-45T00:00:00Z"},
    {"role": None, "database": None, "schema": None, "privileges": None, "tables": None, "default_privileges": None},
])
def test_wrongly_typed_grant_payloads_are_400s(world, api_for, payload):
    response = submit(api_for, type="grant", payload=payload)
    assert response.status_code == 400
    assert any(key.startswith("payload.") for key in response.json()["errors"])


def test_wrongly_typed_role_payload_is_a_400(world, api_for):
    response = submit(api_for, type="role", payload={"name": "a", "login": True, "member_of": [1, None, {"x": 1}],
                                                     "connection_limit": 10**30, "valid_until": 5})
    assert response.status_code == 400
    assert {"payload.member_of", "payload.connection_limit", "payload.valid_until"} <= set(response.json()["errors"])


@pytest.mark.parametrize(("field", "value"), [("instance", "de\x00mo"), ("team", "pay\x00"), ("team", "\ud800"),
                                              ("team", "x" * 300)])
def test_team_or_instance_that_cannot_be_a_name_is_a_400(world, api_for, field, value):
    import json

    body = json.dumps(schema_body(**{field: value}))  # ASCII escapes: a lone surrogate travels as \ud800
    response = api_for("alice").post("/api/v1/requests/", body, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_anything_in_prod_is_high_risk_and_needs_two_reviewers(world, api_for):
    from portal.models import Instance

    prod = Instance.objects.create(name="prod1", environment="prod", host="127.0.0.1", port=world["instance"].port,
                                   admin_user="postgres")
    prod.admin_password = world["instance"].admin_password
    prod.save()
    body = submit(api_for, instance="prod1").json()
    assert body["risk"] == "high" and "production instance: every change there is high risk" in body["risk_reasons"]
    assert body["review"]["approvals_required"] == 2
    first = api_for("bob").post(f"/api/v1/requests/{body['id']}/approve/", {}, format="json").json()
    assert first["status"] == "submitted"
    assert api_for("admin").post(f"/api/v1/requests/{body['id']}/approve/", {},
                                 format="json").json()["status"] == "queued"


def test_the_owner_lead_alone_is_not_enough_and_other_leads_cannot_decide(world, api_for, people):
    schema = request_submit(user=people["dave"], actor_ip=None, type="schema", instance=world["instance"],
                            team=world["analytics"], justification="x",
                            payload={"database": "app", "name": unique("own")})
    apply_for_test(schema)
    role = request_submit(user=people["alice"], actor_ip=None, type="role", instance=world["instance"],
                          team=world["payments"], justification="x", payload={"name": unique("rd"), "login": False})
    apply_for_test(role)
    request_id = submit(api_for, type="grant", payload={"role": role.payload["name"], "database": "app",
                                                        "schema": schema.payload["name"],
                                                        "privileges": ["SELECT"]}).json()["id"]
    # a lead of the *requesting* team is not the owner's lead (and cannot decide on their own request anyway)
    assert api_for("alice").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").status_code == 403
    from portal.selectors.requests import pending_reviews

    assert [r.pk for r in pending_reviews(people["dave"])] == [request_id]  # dave's queue: his team's schema
    after_dave = api_for("dave").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").json()
    assert pending_reviews(people["dave"]) == []
    assert after_dave["status"] == "submitted"
    assert after_dave["review"]["owner_lead_approved"] is True and after_dave["review"]["approvals"] == 0
    assert api_for("dave").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").status_code == 409
    assert api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {},
                               format="json").json()["status"] == "queued"
