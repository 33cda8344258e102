"""Admin pages: teams and members, approval policies — platform admins only, every change audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.models import ApprovalPolicy, Membership, Team


@pytest.mark.parametrize("username,status", [("admin", 200), ("alice", 403), ("bob", 403), ("carol", 403)])
def test_only_admins_see_the_admin_pages(web_for, username, status):
    client = web_for(username)
    policy = ApprovalPolicy.objects.first()
    team = Team.objects.get(name="payments")
    for url in (reverse("team-list"), reverse("team-detail", args=[team.pk]), reverse("policy-list"),
                reverse("policy-edit", args=[policy.pk])):
        assert client.get(url).status_code == status, url


def test_admin_creates_a_team_and_it_is_audited(web_for):
    client = web_for("admin")
    response = client.post(reverse("team-list"), {"name": "billing", "description": "Billing"})
    team = Team.objects.get(name="billing")
    assert response.status_code == 302 and response["Location"] == reverse("team-detail", args=[team.pk])
    event = AuditEvent.objects.get(action="team.created")
    assert event.actor == "admin" and event.details["name"] == "billing"
    page = client.get(reverse("team-list"))
    assert b'id="team-billing"' in page.content


def test_team_form_errors_are_inline_and_keep_the_input(web_for):
    client = web_for("admin")
    response = client.post(reverse("team-list"), {"name": "Bad Name!", "description": "kept text"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="form-errors"' in html  # the summary at the top
    assert 'id="id_name_error"' in html  # and the message next to the field
    assert 'value="Bad Name!"' in html and 'value="kept text"' in html
    assert not Team.objects.filter(name="Bad Name!").exists()
    assert not AuditEvent.objects.filter(action="team.created").exists()


def test_duplicate_team_name_is_refused_on_the_field(web_for):
    response = web_for("admin").post(reverse("team-list"), {"name": "payments"})
    assert response.status_code == 400
    assert "a team with this name exists" in response.content.decode()


def test_admin_adds_promotes_and_removes_a_member(web_for, people):
    client = web_for("admin")
    team = Team.objects.get(name="analytics")
    url = reverse("team-detail", args=[team.pk])
    # add bob as a member
    assert client.post(url, {"username": "bob", "role": "member"}).status_code == 302
    assert Membership.objects.get(team=team, user=people["bob"]).role == "member"
    # make him lead: he gets the lead permission on the team
    assert client.post(url, {"username": "bob", "role": "lead"}).status_code == 302
    assert Membership.objects.get(team=team, user=people["bob"]).role == "lead"
    assert people["bob"].has_perm("portal.lead_team", team)
    # remove him: membership and permission are gone
    assert client.post(url, {"remove": "bob"}).status_code == 302
    assert not Membership.objects.filter(team=team, user=people["bob"]).exists()
    bob = type(people["bob"]).objects.get(pk=people["bob"].pk)  # fresh permission cache
    assert not bob.has_perm("portal.lead_team", team)
    actions = list(AuditEvent.objects.filter(object_type="team", object_id=str(team.pk)).order_by("seq")
                   .values_list("action", flat=True))
    assert actions == ["team.member_added", "team.member_changed", "team.member_removed"]


def test_adding_an_unknown_user_names_the_field(web_for):
    team = Team.objects.get(name="analytics")
    response = web_for("admin").post(reverse("team-detail", args=[team.pk]), {"username": "nobody", "role": "member"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_username_error"' in html and "no such user" in html
    assert 'value="nobody"' in html


def test_policy_matrix_lists_every_policy(web_for):
    html = web_for("admin").get(reverse("policy-list")).content.decode()
    for policy in ApprovalPolicy.objects.all():
        assert f'id="policy-{policy.environment}-{policy.request_type}-{policy.risk}"' in html
    assert "PRODUCTION" in html


def test_admin_edits_a_policy_and_it_is_audited(web_for):
    policy = ApprovalPolicy.objects.get(environment="prod", request_type="grant", risk="high")
    response = web_for("admin").post(reverse("policy-edit", args=[policy.pk]), {
        "approvals_required": 3, "approver_groups": ["reviewers"], "require_owner_lead": "on"})
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.approvals_required == 3 and policy.approver_groups == ["reviewers"] and policy.require_owner_lead
    event = AuditEvent.objects.get(action="policy.changed")
    assert event.details["before"]["approvals_required"] == 2 and event.details["after"]["approvals_required"] == 3


def test_auto_approve_is_refused_outside_low_risk_dev(web_for):
    policy = ApprovalPolicy.objects.get(environment="dev", request_type="grant", risk="medium")
    client = web_for("admin")
    response = client.post(reverse("policy-edit", args=[policy.pk]), {
        "approvals_required": 1, "approver_groups": ["reviewers"], "auto_approve": "on"})
    # the box is disabled on this policy: the posted value is ignored, nothing auto-approves
    policy.refresh_from_db()
    assert not policy.auto_approve
    assert response.status_code == 302
    # and the service itself refuses it, whatever the form says
    from portal.errors import InvalidPayload
    from portal.services.policies import policy_update

    with pytest.raises(InvalidPayload) as refused:
        policy_update(actor=_admin(), policy=policy, approvals_required=1,
                      approver_groups=["reviewers"], require_owner_lead=False, auto_approve=True)
    assert "auto_approve" in refused.value.errors


def test_low_risk_dev_policy_may_auto_approve(web_for):
    policy = ApprovalPolicy.objects.get(environment="dev", request_type="schema", risk="low")
    response = web_for("admin").post(reverse("policy-edit", args=[policy.pk]), {
        "approvals_required": 0, "approver_groups": [], "auto_approve": "on"})
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.auto_approve


def test_policy_form_errors_are_inline(web_for):
    policy = ApprovalPolicy.objects.get(environment="prod", request_type="role", risk="low")
    response = web_for("admin").post(reverse("policy-edit", args=[policy.pk]), {
        "approvals_required": 0, "approver_groups": ["reviewers"]})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_approvals_required_error"' in html and "at least 1" in html


def _admin():
    from django.contrib.auth.models import User

    return User.objects.get(username="admin")
