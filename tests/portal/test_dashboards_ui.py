"""Dashboards and review rules as daily screens (#19 item 8): one card per number, an empty state
instead of empty charts, a Home link for every persona, review rules as switches, error and high in
different colours."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.portal.ui_helpers import dev_instance, given_request


@pytest.mark.parametrize("username", ["alice", "bob", "carol", "admin", "dave"])
def test_every_persona_has_a_home_link_first(web_for, people, username):
    page = web_for(username).get(reverse("entitlements" if username == "carol" else "instance-list"))
    body = page.content.decode()
    nav = body[body.index('aria-label="Main"'):]
    first = re.search(r'<a id="nav-([a-z-]+)"[^>]*href="([^"]+)"', nav)
    assert first and first.groups() == ("home", reverse("home"))


def test_a_quiet_dashboard_shows_empty_states_not_empty_charts(web_for, people):
    # given no request and no drift at all
    body = web_for("bob").get(reverse("home")).content.decode()
    charts = body[body.index('id="dashboard-charts"'):]
    # then no chart canvas is drawn; each card says why it is empty
    assert "<canvas" not in charts
    assert 'id="chart-per-day-empty"' in charts and 'id="chart-median-empty"' in charts
    assert "No open drift" in body


def test_a_busy_dashboard_draws_each_number_once(web_for, people):
    from django.utils import timezone

    dev = dev_instance()
    given_request(requester=people["alice"], instance=dev, status="applied", applied_at=timezone.now())
    body = web_for("admin").get(reverse("home")).content.decode()
    # the charts are drawn when there is data
    assert 'id="chart-per-day"' in body and 'id="chart-median"' in body
    # and open drift is one card (the list), not a list and a chart of the same findings
    assert 'id="chart-drift"' not in body and body.count("Open drift") == 1
    # no card title appears twice
    titles = re.findall(r'<h2 class="h6 mb-0"[^>]*>([^<]+)<', body)
    assert len(titles) == len(set(titles)), titles


def test_review_rules_are_switches_and_error_and_high_differ(web_for, people):
    client = web_for("admin")
    body = client.get(reverse("review-rules")).content.decode()
    switches = re.findall(r'<input class="form-check-input" type="checkbox" role="switch" name="enabled"[^>]*>', body)
    assert switches and all("data-autosubmit" in s for s in switches)
    assert "Turn off" not in body and "Turn on" not in body
    # a ticked switch is on; unticking it posts without "enabled", which switches the rule off
    naming = re.search(r'id="rule-ddlnaming-staging"[^>]*>', body).group(0)
    assert "checked" in naming
    assert client.post(reverse("review-rules"), {"environment": "staging", "rule_id": "ddl.naming"}).status_code == 302
    body = client.get(reverse("review-rules")).content.decode()
    assert "checked" not in re.search(r'id="rule-ddlnaming-staging"[^>]*>', body).group(0)
    # error and high are two different badges (colour and icon), not both the danger red
    assert 'severity-badge severity-error"><i class="bi bi-x-octagon"' in body
    assert 'severity-badge severity-high"><i class="bi bi-exclamation-triangle"' in body
    assert "text-bg-danger" not in body[body.index("<table"):body.index("</table>")]
