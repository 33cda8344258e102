"""The request journey in the browser's terms: preview, submit, decide, reveal — through the real services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.crypto import encrypt
from portal.models import ChangeRequest
from provisioning.models import RequestSecret
from tests.portal.ui_helpers import given_request


def _schema_form(instance, team, **overrides):
    data = {"instance": instance.pk, "team": team.pk, "justification": "a home for the ledger tables",
            "database": "app", "name": "ledger", "owner_role": ""}
    data.update(overrides)
    return data


@pytest.fixture
def alice_team(people):
    return people["alice"].teams.get(name="payments")


def test_preview_returns_the_plan_risk_and_approvers(web_for, managed_instance, alice_team):
    response = web_for("alice").post(reverse("request-preview", args=["schema"]),
                                     _schema_form(managed_instance, alice_team), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="preview-result"' in html
    assert "SCHEMA" in html and "ledger" in html  # the highlighted plan
    assert "risk-badge" in html and 'id="preview-approvers"' in html and "reviewers" in html
    assert not ChangeRequest.objects.exists()  # a preview writes nothing


def test_preview_names_the_bad_field(web_for, managed_instance, alice_team):
    response = web_for("alice").post(reverse("request-preview", args=["schema"]),
                                     _schema_form(managed_instance, alice_team, name="pg_evil"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="preview-problems"' in html and "<strong>Name</strong>" in html
    assert 'id="preview-result"' not in html


def test_preview_lists_what_is_still_missing(web_for, managed_instance, alice_team):
    response = web_for("alice").post(reverse("request-preview", args=["schema"]),
                                     {"instance": managed_instance.pk}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'id="preview-missing"' in html and "Justification" in html and "Name" in html


def test_instance_change_refreshes_the_dropdowns_from_the_inventory(web_for, managed_instance, alice_team):
    from portal.models import InstanceInventory

    InstanceInventory.objects.update_or_create(instance=managed_instance, defaults={"snapshot": {
        "databases": {"app": {"schemas": {"sales": {"owner": "sales_owner", "tables": ["orders", "items"]}}}},
        "roles": {"sales_owner": {"login": False}, "reporting": {"login": True}}}})
    response = web_for("alice").post(reverse("request-form-fields", args=["grant"]),
                                     {"instance": managed_instance.pk, "database": "app", "schema": "sales",
                                      "justification": "kept"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert '<option value="sales" selected>' in html
    # tables are checkboxes (#19: multi-select without Ctrl-click), roles a drop-down
    assert 'type="checkbox" name="tables" value="orders"' in html and '<option value="reporting">' in html
    assert "kept" in html  # nothing typed so far is lost
    assert "invalid-feedback" not in html  # refreshing is not submitting: no errors yet


def test_submit_creates_the_request_and_shows_it(web_for, managed_instance, alice_team):
    client = web_for("alice")
    response = client.post(reverse("request-new-form", args=["schema"]), _schema_form(managed_instance, alice_team))
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("request-detail", args=[change.pk])
    assert change.status == "submitted" and change.requester.username == "alice"
    html = client.get(response["Location"]).content.decode()
    assert f"#{change.pk}" in html and "ledger" in html


def test_submit_errors_are_inline_summarised_and_keep_input(web_for, managed_instance, alice_team):
    response = web_for("alice").post(reverse("request-new-form", args=["schema"]),
                                     _schema_form(managed_instance, alice_team, name="Bad Name"))
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="form-errors"' in html and 'id="id_name_error"' in html
    assert 'value="Bad Name"' in html and "a home for the ledger tables" in html
    assert not ChangeRequest.objects.exists()


def test_reviewer_approves_from_the_page(web_for, people, managed_instance, alice_team):
    change = _submitted(web_for, managed_instance, alice_team)
    response = web_for("bob").post(reverse("request-action", args=[change.pk, "approve"]), {"comment": "ok"})
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.status in ("approved", "queued", "running", "applied")
    assert change.approvals.get().comment == "ok"


def test_reject_needs_a_comment(web_for, people, managed_instance, alice_team):
    change = _submitted(web_for, managed_instance, alice_team)
    bob = web_for("bob")
    bob.post(reverse("request-action", args=[change.pk, "reject"]), {"comment": ""})
    change.refresh_from_db()
    assert change.status == "submitted"
    bob.post(reverse("request-action", args=[change.pk, "reject"]), {"comment": "use the existing schema"})
    change.refresh_from_db()
    assert change.status == "rejected"


def test_requester_cannot_approve_their_own_request(web_for, people, managed_instance, alice_team):
    change = _submitted(web_for, managed_instance, alice_team)
    response = web_for("alice").post(reverse("request-action", args=[change.pk, "approve"]), {"comment": "me"},
                                     follow=True)
    change.refresh_from_db()
    assert change.status == "submitted"
    assert "Could not approve" in response.content.decode()


def test_requester_cancels(web_for, people, managed_instance, alice_team):
    change = _submitted(web_for, managed_instance, alice_team)
    web_for("alice").post(reverse("request-action", args=[change.pk, "cancel"]), {"comment": ""})
    change.refresh_from_db()
    assert change.status == "cancelled"


def _submitted(web_for, instance, team) -> ChangeRequest:
    web_for("alice").post(reverse("request-new-form", args=["schema"]), _schema_form(instance, team))
    return ChangeRequest.objects.get()


def test_reveal_panel_shows_the_password_once(web_for, people, managed_instance):
    change = given_request(requester=people["alice"], instance=managed_instance, type="role", status="applied",
                           payload={"name": "svc_api", "login": True, "member_of": []},
                           plan=["CREATE ROLE \"svc_api\" LOGIN PASSWORD '<generated at apply time>'"])
    RequestSecret.objects.create(request=change, role="svc_api", encrypted=encrypt("s3cret-value-for-the-test-xyz"))
    client = web_for("alice")
    page = client.get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="reveal-password"' in page and "s3cret-value" not in page
    first = client.post(reverse("request-reveal", args=[change.pk]), HTTP_HX_REQUEST="true")
    assert "s3cret-value-for-the-test-xyz" in first.content.decode()
    assert "not be shown again" in first.content.decode()
    assert first["Cache-Control"] == "no-store"
    second = client.post(reverse("request-reveal", args=[change.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "s3cret-value" not in second and "already revealed" in second
    later = client.get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="reveal-gone"' in later and "s3cret-value" not in later
    assert AuditEvent.objects.filter(action="secret.revealed", request_id=change.pk).count() == 1


def test_only_the_requester_sees_the_reveal_panel(web_for, people, managed_instance):
    change = given_request(requester=people["alice"], instance=managed_instance, type="role", status="applied",
                           payload={"name": "svc_api", "login": True, "member_of": []},
                           plan=["CREATE ROLE \"svc_api\" LOGIN PASSWORD '<generated at apply time>'"])
    RequestSecret.objects.create(request=change, role="svc_api", encrypted=encrypt("s3cret-value-for-the-test-xyz"))
    assert 'id="reveal-card"' not in web_for("bob").get(reverse("request-detail", args=[change.pk])).content.decode()
    response = web_for("bob").post(reverse("request-reveal", args=[change.pk]), HTTP_HX_REQUEST="true")
    assert "s3cret-value" not in response.content.decode()
    assert RequestSecret.objects.get(request=change).wiped_at is None


def test_dropdowns_never_offer_system_schemas_and_ddl_offers_the_teams_schemas(web_for, people, managed_instance,
                                                                              alice_team):
    from portal.models import InstanceInventory, ManagedSchema, Team

    InstanceInventory.objects.update_or_create(instance=managed_instance, defaults={"snapshot": {
        "databases": {"app": {"schemas": {s: {"owner": "postgres", "tables": []} for s in
                                          ("public", "dbportal_meta", "information_schema", "billing", "reports")}}},
        "roles": {}}})
    ManagedSchema.objects.create(instance=managed_instance, database="app", name="billing", owner_role="billing_owner",
                                 team=alice_team)
    ManagedSchema.objects.create(instance=managed_instance, database="app", name="reports", owner_role="r_owner",
                                 team=Team.objects.get(name="analytics"))
    client = web_for("alice")
    fields = {"instance": managed_instance.pk, "team": alice_team.pk, "database": "app"}
    grant = client.post(reverse("request-form-fields", args=["grant"]), fields, HTTP_HX_REQUEST="true").content.decode()
    assert '<option value="reports">' in grant and '<option value="public">' in grant  # cross-team access is fine
    assert "dbportal_meta" not in grant and "information_schema" not in grant
    ddl = client.post(reverse("request-form-fields", args=["ddl"]), fields, HTTP_HX_REQUEST="true").content.decode()
    schema_select = ddl[ddl.index('name="schema"'):ddl.index("</select>", ddl.index('name="schema"'))]
    assert '<option value="billing">' in schema_select and "reports" not in schema_select
