"""Behaviour of the daily screens in Chromium (#19): a field's problem appears as the user leaves it,
a refused submit puts focus on the error summary, long pickers filter as you type, a review rule's
switch saves when flipped, the audit drawer walks to the previous event, and a rejected request is
edited and resubmitted. Each page passes axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.models import ChangeRequest, InstanceInventory, ManagedRole, Team
from portal.services.requests import request_reject, request_submit
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_a_field_is_judged_as_the_user_leaves_it_and_the_summary_gets_focus(people, managed_instance, page, login,
                                                                          live_server, axe_violations):
    login(page, "alice", PASSWORD)
    page.goto(live_server.url + "/requests/new/schema/")
    page.locator("#request-form").wait_for()
    # when alice types a name with a hyphen and leaves the field
    page.locator("#id_name").fill("ledger-2")
    page.locator("#id_justification").focus()
    # then the server's verdict shows under the field, in plain words, before any submit
    error = page.locator("#field-name .invalid-feedback")
    error.wait_for()
    assert "not allowed" in error.inner_text() and "[" not in error.inner_text()
    assert page.locator("#id_name").get_attribute("aria-invalid") == "true"
    assert "id_name_error" in page.locator("#id_name").get_attribute("aria-describedby")
    # and a field she has not left yet shows nothing
    assert page.locator("#field-justification .invalid-feedback").count() == 0
    # when she fixes it and leaves again, the error goes
    page.locator("#id_name").fill("ledger_2")
    page.locator("#id_justification").focus()
    page.locator("#field-name .invalid-feedback").wait_for(state="detached")
    assert axe_violations(page) == []
    # when she submits with the justification empty, every problem is listed and the summary has focus
    page.locator("#id_name").fill("Ledger")
    page.locator("#submit-request").click()
    page.locator("#form-errors").wait_for()
    assert page.evaluate("document.activeElement.id") == "form-errors"
    summary = page.locator("#form-errors").inner_text()
    assert "Justification" in summary and "upper case" in summary
    assert page.locator("#id_name").input_value() == "Ledger"  # nothing typed is lost
    assert axe_violations(page) == []
    # the refused submit's 400 is the only thing the console reports
    assert [e for e in page.console_errors if "status of 400" not in e] == []  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_a_long_role_picker_filters_as_you_type(people, managed_instance, page, login, live_server, axe_violations):
    payments = Team.objects.get(name="payments")
    names = [f"p{n}" for n in range(1, 13)] + ["zz_other"]
    for name in names[:12]:
        ManagedRole.objects.create(instance=managed_instance, name=name, login=False, team=payments)
    InstanceInventory.objects.update_or_create(instance=managed_instance, defaults={"snapshot": {
        "databases": {"app": {"schemas": {"s1": {"owner": "x", "tables": []}}}},
        "roles": {name: {"login": False} for name in names}}})
    login(page, "alice", PASSWORD)
    page.goto(live_server.url + f"/requests/new/grant/?instance={managed_instance.pk}&team={payments.pk}")
    select = page.locator("select[name=role]")
    select.wait_for()
    texts = select.locator("option").evaluate_all("options => options.map(o => o.value).filter(Boolean)")
    assert texts[:3] == ["p1", "p2", "p3"] and texts[9] == "p10" and texts[-1] == "zz_other"
    box = page.get_by_label("Filter Role")
    box.fill("p1")
    visible = select.locator("option").evaluate_all(
        "options => options.filter(o => !o.hidden && o.value).map(o => o.value)")
    assert visible == ["p1", "p10", "p11", "p12"]
    assert axe_violations(page) == []


@pytest.mark.django_db(transaction=True)
def test_a_review_rule_switch_saves_when_flipped(people, page, login, live_server, axe_violations):
    from portal.selectors.ddl_rules import enabled_rules

    login(page, "admin", PASSWORD)
    page.goto(live_server.url + "/review-rules/")
    switch = page.locator("#rule-ddlnaming-staging")
    assert switch.is_checked()
    assert axe_violations(page) == []
    switch.click()
    page.wait_for_load_state("networkidle")
    page.locator("#rule-ddlnaming-staging:not(:checked)").wait_for()
    assert "ddl.naming" not in enabled_rules("staging")


@pytest.mark.django_db(transaction=True)
def test_a_rejected_request_is_edited_and_resubmitted(people, managed_instance, page, login, live_server,
                                                      axe_violations):
    payments = Team.objects.get(name="payments")
    old = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                         team=payments, justification="a home for the ledger",
                         payload={"database": "app", "name": "ledger_first"})
    request_reject(request=old, reviewer=people["bob"], actor_ip=None, comment="call it ledger_main")
    login(page, "alice", PASSWORD)
    page.goto(live_server.url + f"/requests/{old.pk}/")
    page.locator("#edit-resubmit").click()
    page.locator("#resubmit-banner").wait_for()
    assert page.locator("#id_name").input_value() == "ledger_first"
    assert page.locator("#id_justification").input_value() == "a home for the ledger"
    assert axe_violations(page) == []
    page.locator("#id_name").fill("ledger_main")
    page.locator("#submit-request").click()
    page.wait_for_url(lambda url: f"/requests/{old.pk}/" not in url and "/new/" not in url)
    new = ChangeRequest.objects.get(resubmit_of=old)
    assert new.payload["name"] == "ledger_main"
    assert page.locator("#resubmit-of a").get_attribute("href") == f"/requests/{old.pk}/"


@pytest.mark.django_db(transaction=True)
def test_the_audit_drawer_walks_to_the_previous_event(people, managed_instance, page, login, live_server,
                                                      axe_violations):
    from audit.models import AuditEvent

    request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                   team=Team.objects.get(name="payments"), justification="audit drawer",
                   payload={"database": "app", "name": "drawer_walk"})
    login(page, "carol", PASSWORD)
    page.goto(live_server.url + "/audit/")
    page.locator(".audit-table a[aria-label^='Event']").first.click()
    title = page.locator("#event-drawer-title")
    page.locator("#event-permalink").wait_for()
    first_title = title.inner_text()
    assert first_title.startswith("Event ")
    seq = int(first_title.split()[1])
    page.locator("#event-previous").click()
    expect(title).not_to_contain_text(f"Event {seq} ")
    previous = AuditEvent.objects.filter(seq__lt=seq, seq__gt=0).order_by("-seq").first()
    assert title.inner_text().startswith(f"Event {previous.seq} ")
    assert page.locator("#event-permalink").get_attribute("href") == f"/audit/events/{previous.seq}/"
    assert axe_violations(page) == []
