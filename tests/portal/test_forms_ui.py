"""Request forms in plain words (#19 item 4): every field's problem at once, the server's verdict
for each field in the preview answer (shown as the user leaves a field), no pattern shown to users,
one naming rule for the replica form and its plan, Revoke's own help text, a grant preview that
names exactly the privileges ticked."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from portal.forms.requests import REPLICA_EXAMPLE, ReplicaRequestForm, RevokeRequestForm
from portal.models import ChangeRequest, InstanceInventory
from provisioning.naming import name_problem
from provisioning.plans import replica as replica_plan


@pytest.fixture
def alice_team(people):
    return people["alice"].teams.get(name="payments")


@pytest.fixture
def inventory(managed_instance, alice_team):
    """A role and a schema of payments that exist on the managed cluster (the plan checks both)."""
    from portal.models import ManagedRole, ManagedSchema
    from provisioning.connections import connect

    with connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ui19_reporting') "
                     "THEN CREATE ROLE ui19_reporting NOLOGIN; END IF; "
                     "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ui19_owner') "
                     "THEN CREATE ROLE ui19_owner NOLOGIN; END IF; END $$")
        conn.execute("CREATE SCHEMA IF NOT EXISTS ui19_sales AUTHORIZATION ui19_owner")
    ManagedRole.objects.create(instance=managed_instance, name="ui19_reporting", login=False, team=alice_team)
    ManagedRole.objects.create(instance=managed_instance, name="ui19_owner", login=False, team=alice_team)
    ManagedSchema.objects.create(instance=managed_instance, database="app", name="ui19_sales", owner_role="ui19_owner",
                                 team=alice_team)
    InstanceInventory.objects.update_or_create(instance=managed_instance, defaults={"snapshot": {
        "databases": {"app": {"schemas": {"ui19_sales": {"owner": "ui19_owner", "tables": []}}}},
        "roles": {"ui19_owner": {"login": False}, "ui19_reporting": {"login": False}}}})
    return managed_instance


def field_errors(html: str) -> dict:
    match = re.search(r'<script id="preview-field-errors" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the preview carries the fields' problems"
    return json.loads(match.group(1))


def test_replica_example_name_is_valid_and_the_form_takes_what_the_plan_takes(people, managed_instance):
    # the example in the help text passes the one naming rule
    form = ReplicaRequestForm(user=people["alice"])
    assert REPLICA_EXAMPLE in str(form.fields["name"].help_text)
    assert name_problem(REPLICA_EXAMPLE) is None
    # and the form refuses exactly what the plan refuses: hyphens, upper case, a leading digit, pg_
    for name, accepted in [("demo_replica_1", True), ("demo-replica-1", False), ("Demo", False),
                           ("1demo", False), ("pg_demo", False), ("select", False)]:
        form = ReplicaRequestForm({"instance": managed_instance.pk, "team": people["alice"].teams.first().pk,
                                   "justification": "x", "name": name}, user=people["alice"])
        assert form.is_valid() is accepted, (name, form.errors)
        assert (name_problem(name) is None) is accepted
        if not accepted:
            message = form.errors["name"][0]
            assert message == name_problem(name)
            assert not re.search(r"[\[\]^$\\]", message), message  # plain words, no pattern
    assert replica_plan.ALLOWED_KEYS == {"name"}


def test_revoke_help_says_the_role_loses_privileges(people):
    form = RevokeRequestForm(user=people["alice"])
    help_text = str(form.fields["role"].help_text)
    assert "loses" in help_text and "receives" not in help_text
    assert "taken away" in str(form.fields["privileges"].help_text)


def test_every_field_problem_is_listed_at_submit(web_for, people, managed_instance, alice_team):
    # given a schema form with no justification and a bad name
    response = web_for("alice").post(reverse("request-new-form", args=["schema"]), {
        "instance": managed_instance.pk, "team": alice_team.pk, "database": "app", "name": "Ledger-2"})
    body = response.content.decode()
    # then both problems are in the summary at once, in plain words, and nothing was filed
    assert response.status_code == 400
    summary = body[body.index('id="form-errors"'):body.index("</div>", body.index('id="form-errors"'))]
    assert 'tabindex="-1"' in body[body.index('id="form-errors"') - 80:body.index('id="form-errors"') + 40]
    assert "Justification" in summary and "Name" in summary and "upper case" in summary
    assert not ChangeRequest.objects.exists()


def test_the_preview_carries_each_fields_verdict(web_for, managed_instance, alice_team):
    response = web_for("alice").post(reverse("request-preview", args=["schema"]), {
        "instance": managed_instance.pk, "team": alice_team.pk, "database": "app", "name": "bad name"},
        HTTP_HX_REQUEST="true")
    errors = field_errors(response.content.decode())
    assert "justification" in errors and "name" in errors
    assert "space" in errors["name"][0]
    assert "instance" not in errors and "team" not in errors
    good = web_for("alice").post(reverse("request-preview", args=["schema"]), {
        "instance": managed_instance.pk, "team": alice_team.pk, "database": "app", "name": "ledger",
        "justification": "why"}, HTTP_HX_REQUEST="true")
    assert field_errors(good.content.decode()) == {}


@pytest.mark.parametrize("ticked,usage_note", [(["SELECT", "INSERT"], True), (["USAGE", "SELECT"], False),
                                               (["USAGE"], False)])
def test_grant_preview_names_exactly_the_privileges_ticked(web_for, inventory, alice_team, ticked, usage_note):
    response = web_for("alice").post(reverse("request-preview", args=["grant"]), {
        "instance": inventory.pk, "team": alice_team.pk, "justification": "report", "role": "ui19_reporting",
        "database": "app", "schema": "ui19_sales", "privileges": ticked, "tables_mode": "all"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'id="preview-result"' in html, html
    sentence = html[html.index('id="preview-privileges"'):html.index("</p>", html.index('id="preview-privileges"'))]
    named = re.findall(r"<strong>([A-Z]+)</strong>", sentence.split('id="preview-usage-note"')[0])
    assert named == ticked
    assert ('id="preview-usage-note"' in sentence) is usage_note


def test_revoke_preview_says_revokes(web_for, inventory, alice_team):
    response = web_for("alice").post(reverse("request-preview", args=["revoke"]), {
        "instance": inventory.pk, "team": alice_team.pk, "justification": "gone", "role": "ui19_reporting",
        "database": "app", "schema": "ui19_sales", "privileges": ["SELECT"], "tables_mode": "all"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    if 'id="preview-result"' in html:  # the plan may refuse a revoke of what the role does not hold
        assert "Revokes exactly the privileges ticked: <strong>SELECT</strong>" in html
        assert 'id="preview-usage-note"' not in html
    else:
        assert 'id="preview-problems"' in html


def test_pickers_list_the_teams_own_first_in_natural_order(web_for, people, managed_instance, alice_team):
    from portal.models import ManagedRole

    # given roles p1, p2, p10 of payments and a1, b10, b9 of nobody in the inventory
    roles = ["p10", "a1", "p2", "b10", "p1", "b9"]
    for name in ("p1", "p2", "p10"):
        ManagedRole.objects.create(instance=managed_instance, name=name, login=False, team=alice_team)
    InstanceInventory.objects.update_or_create(instance=managed_instance, defaults={"snapshot": {
        "databases": {"app": {"schemas": {"s1": {"owner": "x", "tables": ["t10", "t2", "t1"]}}}},
        "roles": {name: {"login": False} for name in roles}}})
    html = web_for("alice").post(reverse("request-form-fields", args=["grant"]), {
        "instance": managed_instance.pk, "team": alice_team.pk, "database": "app", "schema": "s1"},
        HTTP_HX_REQUEST="true").content.decode()
    role_select = html[html.index('name="role"'):html.index("</select>", html.index('name="role"'))]
    # then the team's roles come first, in their own group, in natural order; then the others
    assert 'data-searchable' in html[html.index('<select name="role"'):html.index('name="role"') + 200]
    assert re.findall(r'<option value="([a-z0-9]+)"', role_select) == ["p1", "p2", "p10", "a1", "b9", "b10"]
    assert '<optgroup label="Team payments">' in role_select and '<optgroup label="Other">' in role_select
    # and tables are checkboxes in natural order, in a list that can be filtered
    assert re.findall(r'name="tables" value="([a-z0-9]+)"', html) == ["t1", "t2", "t10"]
    assert 'data-picker="Only these tables"' in html
    # and a role's groups (member_of) are checkboxes too
    role_form = web_for("alice").post(reverse("request-form-fields", args=["role"]), {
        "instance": managed_instance.pk, "team": alice_team.pk}, HTTP_HX_REQUEST="true").content.decode()
    assert re.findall(r'name="member_of" value="([a-z0-9]+)"', role_form) == ["p1", "p2", "p10", "a1", "b9", "b10"]


def test_the_top_bar_search_suggests_requests(web_for, people, managed_instance, alice_team):
    from tests.portal.ui_helpers import given_request

    mine = given_request(requester=people["alice"], instance=managed_instance, team=alice_team, type="schema",
                         payload={"database": "app", "name": "ledger_suggest"}, plan=['CREATE SCHEMA "x"'])
    body = web_for("alice").get(reverse("request-search"), {"q": "ledger_sug", "suggest": "1"}).content.decode()
    assert f'<option value="#{mine.pk}"' in body and "ledger_suggest" in body and "<html" not in body
    # another team's developer is suggested nothing of payments'
    assert "option" not in web_for("dave").get(reverse("request-search"), {"q": "ledger_sug", "suggest": "1"}
                                               ).content.decode()
