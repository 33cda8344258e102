"""My access (with "request removal" pre-filling a revoke) and the dashboard numbers."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import ChangeRequest, Grant, ManagedRole
from provisioning.models import DriftFinding
from tests.portal.ui_helpers import dev_instance, given_request


@pytest.fixture
def held(people):
    """payments holds a login role and a time-bound SELECT grant on dev-one; analytics holds one too."""
    dev = dev_instance()
    payments = people["alice"].teams.get()
    analytics = people["dave"].teams.get()
    ManagedRole.objects.create(instance=dev, name="payments_api", login=True, team=payments)
    grant = Grant.objects.create(instance=dev, database="app", schema="payments", role="payments_api",
                                 privileges=["SELECT", "INSERT"], tables=["invoices"], team=payments,
                                 expires_at=timezone.now() + timedelta(days=7))
    Grant.objects.create(instance=dev, database="app", schema="analytics", role="analytics_ro",
                         privileges=["SELECT"], tables="all", team=analytics)
    return {"dev": dev, "grant": grant}


def test_my_access_lists_my_teams_roles_and_grants_with_expiry(web_for, held):
    html = web_for("alice").get(reverse("my-access")).content.decode()
    assert "payments_api" in html and f'id="grant-{held["grant"].pk}"' in html
    # relative expiry, the absolute UTC time on hover
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC">in (6\xa0days|1\xa0week)</time>', html)
    assert "analytics_ro" not in html  # another team's access is not mine


def test_request_removal_prefills_a_revoke(web_for, held):
    client = web_for("alice")
    html = client.get(reverse("my-access")).content.decode()
    link = html.split(f'id="remove-grant-{held["grant"].pk}" href="')[1].split('"')[0].replace("&amp;", "&")
    assert link.startswith(reverse("request-new-form", args=["revoke"]))
    form = client.get(link).content.decode()
    assert f'<option value="{held["dev"].pk}" selected>' in form
    assert 'value="payments_api"' in form and 'value="app"' in form and 'value="payments"' in form
    assert 'value="SELECT" id="id_privileges_2" checked' in form and 'value="INSERT" id="id_privileges_3" checked' in form
    # tables are checkboxes (#19: multi-select without Ctrl-click)
    assert 'value="list" id="id_tables_mode_1" checked' in form
    assert re.search(r'name="tables" value="invoices" id="id_tables_\d+" checked', form)


def test_my_access_empty_state(web_for, people):
    html = web_for("alice").get(reverse("my-access")).content.decode()
    assert "Your teams hold no roles or privileges yet" in html


def test_dashboard_numbers(web_for, people):
    dev = dev_instance()
    now = timezone.now()
    if now.hour == 0 and now.minute < 40:
        # half an hour before now would be yesterday: keep the two requests inside today's bucket
        now = now.replace(minute=40)
    applied = given_request(requester=people["alice"], instance=dev, status="applied")
    ChangeRequest.objects.filter(pk=applied.pk).update(created_at=now - timedelta(minutes=30), applied_at=now)
    other = given_request(requester=people["alice"], instance=dev, status="applied")
    ChangeRequest.objects.filter(pk=other.pk).update(created_at=now - timedelta(minutes=10), applied_at=now)
    given_request(requester=people["dave"], instance=dev, status="submitted")
    DriftFinding.objects.create(instance=dev, kind="unexpected_privilege", role="intern", privilege="SELECT")
    data = web_for("bob").get(reverse("dashboard-data")).json()
    today = now.date().isoformat()
    index = data["days"].index(today)
    assert data["per_status"]["applied"][index] == 2 and data["per_status"]["submitted"][index] == 1
    assert data["median_minutes"][index] == pytest.approx(20.0, abs=0.2)
    assert data["drift"] == {"labels": [dev.name], "counts": [1]}
    # the home page carries the same numbers for the charts (json_script, allowed by the CSP)
    home = web_for("bob").get(reverse("home")).content.decode()
    assert 'id="dashboard-data" type="application/json"' in home and 'id="chart-per-day"' in home
