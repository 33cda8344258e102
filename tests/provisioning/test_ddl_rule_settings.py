"""Platform admins switch DDL review rules per environment; the switch is audited and takes effect."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import DdlRuleSetting
from portal.selectors.ddl_rules import enabled_rules
from portal.services.ddl_rules import rule_setting_set
from provisioning.ddl.rules import RULES


def test_every_rule_is_seeded_on_in_every_environment(db):
    for environment in ("dev", "staging", "prod"):
        assert enabled_rules(environment) == set(RULES)
    assert DdlRuleSetting.objects.count() == 3 * len(RULES)


def test_admin_switches_a_rule_off_in_one_environment_only(people):
    rule_setting_set(actor=people["admin"], environment="dev", rule_id="ddl.table_without_primary_key", enabled=False)
    assert "ddl.table_without_primary_key" not in enabled_rules("dev")
    assert "ddl.table_without_primary_key" in enabled_rules("prod")
    event = AuditEvent.objects.filter(action="ddl_rule.changed").get()
    assert event.actor == "admin" and event.outcome == "disabled"
    assert event.details == {"environment": "dev", "rule_id": "ddl.table_without_primary_key",
                             "before": True, "after": False}


def test_a_rule_without_a_row_is_on_and_switching_it_off_records_it_was_on(people):
    # given a rule whose row is gone (a missing row means the rule is on)
    DdlRuleSetting.objects.filter(environment="staging", rule_id="ddl.naming").delete()
    assert "ddl.naming" in enabled_rules("staging")
    # when an admin switches it off, the event says it was on before
    rule_setting_set(actor=people["admin"], environment="staging", rule_id="ddl.naming", enabled=False)
    assert "ddl.naming" not in enabled_rules("staging")
    event = AuditEvent.objects.filter(action="ddl_rule.changed", object_id="ddl.naming").get()
    assert event.details["before"] is True and event.details["after"] is False


@pytest.mark.parametrize("username", ["alice", "bob", "carol"])
def test_only_admins_switch_rules(people, username):
    with pytest.raises(PolicyViolation):
        rule_setting_set(actor=people[username], environment="dev", rule_id="ddl.naming", enabled=False)
    assert enabled_rules("dev") == set(RULES)


@pytest.mark.parametrize(("environment", "rule_id", "field"), [("qa", "ddl.naming", "environment"),
                                                               ("dev", "ddl.nope", "rule_id")])
def test_unknown_environment_or_rule_is_refused(people, environment, rule_id, field):
    with pytest.raises(InvalidPayload) as caught:
        rule_setting_set(actor=people["admin"], environment=environment, rule_id=rule_id, enabled=False)
    assert field in caught.value.errors


def test_review_rules_page_lists_rules_and_toggles_them(web_for, django_assert_max_num_queries):
    client = web_for("admin")
    with django_assert_max_num_queries(12):
        page = client.get(reverse("review-rules"))
    assert page.status_code == 200
    body = page.content.decode()
    for rule_id in RULES:
        assert rule_id in body
    assert 'href="/review-rules/"' in body  # the admin's navigation shows the page
    answer = client.post(reverse("review-rules"), {"environment": "staging", "rule_id": "ddl.naming"})
    assert answer.status_code == 302
    assert "ddl.naming" not in enabled_rules("staging")
    client.post(reverse("review-rules"), {"environment": "staging", "rule_id": "ddl.naming", "enabled": "on"})
    assert "ddl.naming" in enabled_rules("staging")
    bad = client.post(reverse("review-rules"), {"environment": "staging", "rule_id": "ddl.bogus"})
    assert bad.status_code == 400 and "unknown rule" in bad.content.decode()


@pytest.mark.parametrize("username", ["alice", "bob", "carol"])
def test_review_rules_page_is_for_admins_only(web_for, username):
    client = web_for(username)
    assert client.get(reverse("review-rules")).status_code == 403
    assert client.post(reverse("review-rules"), {"environment": "dev", "rule_id": "ddl.naming"}).status_code == 403
    assert enabled_rules("dev") == set(RULES)


def test_a_rule_switched_off_no_longer_refuses_or_rates(people):
    from provisioning.ddl import parse, rules

    statements = parse.parse('CREATE TABLE "Bad" (id int)')
    assert {f.rule for f in rules.evaluate(statements, enabled=enabled_rules("dev"))} == {
        "ddl.naming", "ddl.table_without_primary_key"}
    rule_setting_set(actor=people["admin"], environment="dev", rule_id="ddl.naming", enabled=False)
    assert [f.rule for f in rules.evaluate(statements, enabled=enabled_rules("dev"))] == [
        "ddl.table_without_primary_key"]
