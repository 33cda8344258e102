"""Risk rules, reviewer queue order, "my access", can_approve."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.models import ChangeRequest, Grant, ManagedRole, Team
from portal.risk import risk_assess
from portal.selectors.requests import can_approve, my_access, pending_reviews, request_get_for
from portal.services.requests import request_cancel, request_submit
from tests.portal.requests_helpers import unique


def rate(request_type="grant", environment="dev", team_id=1, owner_team_id=1, **payload):
    return risk_assess(request_type=request_type, payload=payload, environment=environment, team_id=team_id,
                       owner_team_id=owner_team_id)


@pytest.mark.parametrize(("kwargs", "level", "reason"), [
    ({"privileges": ["SELECT"]}, "low", "read access"),
    ({"privileges": ["SELECT"], "expires_at": "2030-01-01T00:00:00Z"}, "low", "time-bound"),
    ({"privileges": ["SELECT"], "owner_team_id": 2}, "low", "another team's schema: its lead approves too"),
    ({"privileges": ["SELECT", "INSERT"]}, "medium", "write access (INSERT / UPDATE)"),
    ({"privileges": ["DELETE"]}, "medium", "DELETE / TRUNCATE"),
    ({"privileges": ["TRUNCATE"]}, "medium", "DELETE / TRUNCATE"),
    ({"privileges": ["TRIGGER"]}, "medium", "REFERENCES / TRIGGER"),
    ({"privileges": ["SELECT"], "default_privileges": True}, "medium", "default privileges"),
    ({"privileges": ["USAGE", "CREATE"]}, "high", "CREATE on a schema"),
    ({"privileges": ["UPDATE"], "owner_team_id": 2}, "high", "write access to another team's schema"),
    ({"privileges": ["SELECT"], "environment": "prod"}, "high", "production instance"),
    ({"request_type": "role", "login": True}, "medium", "login role"),
    ({"request_type": "role", "login": False}, "low", "group role without login"),
    ({"request_type": "schema", "name": "x"}, "low", "new empty schema"),
    ({"request_type": "schema", "name": "x", "environment": "prod"}, "high", "production"),
    ({"request_type": "revoke", "privileges": ["DELETE"]}, "low", "takes access away"),
    ({"request_type": "replica", "name": "x"}, "medium", "read replica: a full copy"),
])
def test_risk_rules(kwargs, level, reason):
    risk, reasons = rate(**kwargs)
    assert risk == level
    assert any(reason in r for r in reasons), reasons


def test_risk_reasons_list_the_highest_first():
    risk, reasons = rate(privileges=["SELECT", "CREATE", "DELETE"], environment="prod")
    assert risk == "high"
    assert reasons[:2] == ["production instance: every change there is high risk",
                           "CREATE on a schema: the role may create objects in it"]


@pytest.fixture
def world(people, managed_instance):
    return {"instance": managed_instance, "payments": Team.objects.get(name="payments"), **people}


def submit(world, who="alice", **payload):
    request_type = payload.pop("type", "schema")
    payload = payload or {"database": "app", "name": unique("q")}
    return request_submit(user=world[who], actor_ip=None, type=request_type, instance=world["instance"],
                          team=world["payments"], justification="queue", payload=payload)


def test_pending_reviews_are_ordered_by_risk_then_age(world):
    low_old = submit(world)
    medium = submit(world, type="role", name=unique("svc"), login=True)
    low_new = submit(world)
    cancelled = submit(world)
    request_cancel(request=cancelled, user=world["alice"])
    ChangeRequest.objects.filter(pk=low_new.pk).update(created_at=timezone.now() + timedelta(seconds=5))
    assert [r.pk for r in pending_reviews(world["bob"])] == [medium.pk, low_old.pk, low_new.pk]
    assert pending_reviews(world["alice"]) == []  # not a reviewer, leads no owning team
    assert pending_reviews(world["carol"]) == []
    assert pending_reviews(world["dave"]) == []


def test_a_decided_request_leaves_the_reviewers_queue(world, api_for):
    request = submit(world)
    api_for("bob").post(f"/api/v1/requests/{request.pk}/approve/", {}, format="json")
    assert request.pk not in [r.pk for r in pending_reviews(world["bob"])]


def test_can_approve_explains_why_not(world):
    request = submit(world)
    assert can_approve(world["bob"], request) == (True, "")
    assert can_approve(world["alice"], request)[1] == "you cannot approve or reject your own request"
    assert "only reviewers, platform-admins" in can_approve(world["carol"], request)[1]


def test_request_get_for_is_scoped(world):
    request = submit(world)
    assert request_get_for(world["bob"], request.pk) == request
    from django.http import Http404

    with pytest.raises(Http404):
        request_get_for(world["dave"], request.pk)


def test_my_access_lists_the_teams_roles_and_live_grants_with_expiry(world):
    instance, team = world["instance"], world["payments"]
    ManagedRole.objects.create(instance=instance, name="payments_svc", team=team, login=True)
    expires = timezone.now() + timedelta(days=3)
    Grant.objects.create(instance=instance, database="app", schema="s", role="payments_svc", privileges=["SELECT"],
                         tables="all", team=team, expires_at=expires)
    Grant.objects.create(instance=instance, database="app", schema="s", role="payments_svc", privileges=["INSERT"],
                         tables="all", team=team, revoked_at=timezone.now())
    access = my_access(world["alice"])
    assert [(g.privileges, g.expires_at) for g in access["grants"]] == [(["SELECT"], expires)]
    assert [r.name for r in access["roles"]] == ["payments_svc"]
    assert list(my_access(world["dave"])["grants"]) == []


# --- the review queue: who waits for whom, in one query -----------------------------------------


@pytest.fixture
def queue_world(people):
    """Two more people: erin leads analytics through a group's permission; frank holds the lead
    permission on payments without being a member (so he leads nothing). Policies: the defaults,
    except dev role/medium has none (fallback), dev ddl/low is for admins only, a cross-team
    dev grant/medium needs no owner lead, and dev grant/high is for requesters (not reviewers)."""
    from django.contrib.auth.models import Group, User
    from guardian.shortcuts import assign_perm

    from portal.models import ApprovalPolicy, Membership
    from tests.portal.ui_helpers import dev_instance

    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    requesters = Group.objects.get(name="requesters")
    erin = User.objects.create(username="erin")
    erin.groups.add(requesters, Group.objects.create(name="analytics-leads"))
    Membership.objects.create(user=erin, team=analytics)
    assign_perm("portal.lead_team", Group.objects.get(name="analytics-leads"), analytics)
    frank = User.objects.create(username="frank")
    frank.groups.add(requesters)
    assign_perm("portal.lead_team", frank, payments)
    dev = ApprovalPolicy.objects.filter(environment="dev")
    dev.filter(request_type="role", risk="medium").delete()
    dev.filter(request_type="ddl", risk="low").update(approver_groups=["platform-admins"])
    dev.filter(request_type="grant", risk="medium").update(require_owner_lead=False)
    dev.filter(request_type="grant", risk="high").update(approver_groups=["requesters"])
    return {**people, "erin": erin, "frank": frank, "payments": payments, "analytics": analytics,
            "instance": dev_instance()}


def test_pending_reviews_follow_the_decision_rules_in_one_query(queue_world, django_assert_max_num_queries):
    from django.db import transaction
    from django.http import Http404

    from portal.errors import Conflict, PolicyViolation
    from portal.models import Approval
    from portal.personas import user_groups
    from portal.selectors.requests import pending_review_count, pending_reviews_queryset
    from portal.services.requests import request_approve
    from tests.portal.ui_helpers import given_request

    w = queue_world
    payments, analytics = w["payments"], w["analytics"]

    def made(requester, team, request_type="schema", risk="low", **fields):
        return given_request(requester=requester, team=team, instance=w["instance"], type=request_type,
                             risk=risk, **fields)

    everyone = ["admin", "alice", "bob", "carol", "dave", "erin", "frank"]
    # given requests, each with the people whose queue it must be in
    cases = {
        "plain schema": (made(w["alice"], payments), {"admin", "bob"}),
        "cross-team grant: the owning team's leads too, by permission or by group":
            (made(w["alice"], payments, "grant", owner_team=analytics), {"admin", "bob", "dave", "erin"}),
        "grant on the team's own schema: no lead slot":
            (made(w["dave"], analytics, "grant", owner_team=analytics), {"admin", "bob"}),
        "cross-team grant whose policy wants no owner lead: the owning team's lead decides anyway (#14)":
            (made(w["alice"], payments, "grant", "medium", owner_team=analytics), {"admin", "bob", "dave", "erin"}),
        "no policy row: reviewers and admins":
            (made(w["alice"], payments, "role", "medium"), {"admin", "bob"}),
        "admins-only policy": (made(w["alice"], payments, "ddl"), {"admin"}),
        "policy for requesters: a lead who is a requester, not the reviewers":
            (made(w["dave"], analytics, "grant", "high", owner_team=payments), {"alice"}),
        "drift revoke bob filed: not in his queue":
            (made(None, payments, "revoke", owner_team=analytics, filed_by=w["bob"]),
             {"admin", "dave", "erin"}),
        "bob's own request": (made(w["bob"], payments), {"admin"}),
        "bob decided on this plan": (made(w["alice"], payments), {"admin"}),
        "bob decided on an earlier plan": (made(w["alice"], payments), {"admin", "bob"}),
        "no longer submitted": (made(w["alice"], payments, status="approved"), set()),
        "frank holds payments' lead permission but is no member":
            (made(w["dave"], analytics, "grant", owner_team=payments), {"admin", "bob", "alice"}),
    }
    decided, earlier = cases["bob decided on this plan"][0], cases["bob decided on an earlier plan"][0]
    Approval.objects.create(request=decided, reviewer=w["bob"], decision="reject", plan_hash=decided.plan_hash)
    Approval.objects.create(request=earlier, reviewer=w["bob"], decision="approve", plan_hash="0" * 64)

    for username in everyone:
        user = w[username]
        user_groups(user)  # loaded once per HTTP request anyway (token auth, persona)
        # when the user's queue is read, or counted for the nav badge: one query each
        with django_assert_max_num_queries(1):
            queue = [r.pk for r in pending_reviews_queryset(user)]
        with django_assert_max_num_queries(1):
            count = pending_review_count(user)
        # then it holds exactly the requests waiting for them
        expected = {case: r.pk for case, (r, who) in cases.items() if username in who}
        missing = {case for case, pk in expected.items() if pk not in queue}
        extra = {case for case, (r, _) in cases.items() if r.pk in queue and case not in expected}
        assert (missing, extra) == (set(), set()), username
        assert count == len(queue) == len(expected)
        # and for everyone, being in the queue is exactly being allowed to decide: by the check a page
        # shows (on the object as loaded, and on the row as the detail reads it) and by the approve
        # action itself, which refuses with a domain error (403 / 409) exactly what the queue leaves out
        for case, (request, _) in cases.items():
            allowed = request.pk in queue
            assert can_approve(user, request)[0] == allowed, (username, case)
            assert can_approve(user, ChangeRequest.objects.get(pk=request.pk))[0] == allowed, (username, case)
            try:
                assert can_approve(user, request_get_for(user, request.pk))[0] == allowed, (username, case)
            except Http404:
                assert not allowed, (username, case)
            with transaction.atomic():
                try:
                    request_approve(request=request, reviewer=user, comment="")
                    approved = True
                except (PolicyViolation, Conflict):
                    approved = False
                transaction.set_rollback(True)
            assert approved == allowed, (username, case)


def test_a_lead_is_a_member_holding_the_permission_for_the_tally_and_the_mail_as_for_the_rules(queue_world):
    from portal.selectors.approvals import team_leads

    w = queue_world
    # erin leads analytics through a group and is a member; dave leads it himself
    assert team_leads(w["analytics"]) == {w["dave"].pk, w["erin"].pk}
    # frank holds lead_team on payments but is no member: no lead there, as the decision rules say
    assert w["frank"].pk not in team_leads(w["payments"]) and w["alice"].pk in team_leads(w["payments"])
