"""Every page renders for each persona allowed to see it, and refuses (302/403/404) the others."""

from __future__ import annotations

import pytest
from django.urls import reverse

from provisioning.models import DriftFinding
from tests.portal.ui_helpers import dev_instance, given_request, prod_instance

PERSONAS = ["admin", "alice", "dave", "bob", "carol"]


@pytest.fixture
def world(people):
    """alice's grant request on a dev instance and a prod instance with a drift finding."""
    dev = dev_instance()
    prod = prod_instance()
    request = given_request(requester=people["alice"], instance=dev)
    DriftFinding.objects.create(instance=prod, kind="unexpected_privilege", role="intern", object_type="table",
                                object_name="payments.ledger", privilege="SELECT")
    return {"dev": dev, "prod": prod, "request": request}


def _pages(world):
    return {
        "home": reverse("home"),
        "request-new": reverse("request-new"),
        "request-new-form": reverse("request-new-form", args=["grant"]),
        "request-list": reverse("request-list"),
        "request-detail": reverse("request-detail", args=[world["request"].pk]),
        "request-status": reverse("request-status", args=[world["request"].pk]),
        "request-search": reverse("request-search") + "?q=reporting",
        "my-access": reverse("my-access"),
        "review-queue": reverse("review-queue"),
        "drift-list": reverse("drift-list"),
        "instance-list": reverse("instance-list"),
        "instance-detail": reverse("instance-detail", args=[world["prod"].pk]),
        "team-list": reverse("team-list"),
        "policy-list": reverse("policy-list"),
        "dashboard-data": reverse("dashboard-data"),
    }


# persona -> page -> expected status (302 for the auditor's home: the audit log, when installed)
EXPECTED = {
    "alice": {"review-queue": 403, "drift-list": 403, "team-list": 403, "policy-list": 403, "dashboard-data": 403},
    "dave": {"review-queue": 403, "drift-list": 403, "team-list": 403, "policy-list": 403, "dashboard-data": 403,
             "request-detail": 404, "request-status": 404},
    "bob": {"team-list": 403, "policy-list": 403},
    "carol": {"review-queue": 403, "team-list": 403, "policy-list": 403, "dashboard-data": 403},
    "admin": {},
}


@pytest.mark.parametrize("username", PERSONAS)
def test_page_access_by_persona(web_for, world, username):
    client = web_for(username)
    for name, url in _pages(world).items():
        expected = EXPECTED[username].get(name, 200)
        response = client.get(url)
        if username == "carol" and name == "home" and response.status_code == 302:
            continue  # the auditor's home is the audit log once the audit pages are installed
        assert response.status_code == expected, (username, name, response.status_code)


def test_anonymous_visitors_are_sent_to_sign_in(db, client, people, world):
    for name, url in _pages(world).items():
        response = client.get(url)
        assert response.status_code == 302 and reverse("login") in response["Location"], name


@pytest.mark.parametrize("username,expected,absent", [
    ("alice", ["New request", "My requests", "My access", "Instances"], ["Review queue", "Teams", "Drift"]),
    ("bob", ["Review queue", "All requests", "Drift", "Instances"], ["Teams", "Policies", "My access"]),
    ("carol", ["Audit log", "Exports", "Entitlements", "Verify", "Drift"], ["Review queue", "New request", "Teams"]),
    ("admin", ["Instances", "Teams", "Policies", "Review queue", "All requests", "Drift"], ["My access"]),
])
def test_navigation_follows_the_persona(web_for, world, username, expected, absent):
    html = web_for(username).get(reverse("instance-list")).content.decode()
    nav = html[html.index('aria-label="Main"'):html.index("</nav>", html.index('aria-label="Main"'))]
    for label in expected:
        assert label in nav, label
    for label in absent:
        assert label not in nav, label


def test_every_page_has_a_title_and_the_frame(web_for, world):
    client = web_for("admin")
    for name, url in _pages(world).items():
        if name in ("request-status", "dashboard-data"):
            continue
        html = client.get(url).content.decode()
        assert 'id="page-title"' in html, name
        assert 'id="global-search"' in html and 'id="portal-env"' in html and 'id="user-menu"' in html, name
        assert "<script>" not in html and " onclick=" not in html, name  # the CSP forbids inline scripts


def test_review_queue_nav_shows_the_pending_count(web_for, world, people):
    given_request(requester=people["dave"], instance=world["dev"], team=None)
    html = web_for("bob").get(reverse("home")).content.decode()
    assert 'id="review-count"' in html
    count = html.split('id="review-count"')[1].split(">")[1].split("<")[0]
    assert int(count) == 2


def test_empty_review_queue_says_so(web_for, people):
    html = web_for("bob").get(reverse("review-queue")).content.decode()
    assert "No pending reviews — you're done" in html


def test_prod_is_spelled_out_and_drift_is_listed(web_for, world):
    html = web_for("bob").get(reverse("drift-list")).content.decode()
    assert "PRODUCTION" in html and "intern" in html and "payments.ledger" in html
    detail = web_for("bob").get(reverse("instance-detail", args=[world["prod"].pk])).content.decode()
    assert "PRODUCTION" in detail and "intern" in detail


def test_developer_does_not_see_drift_on_the_instance_page(web_for, world):
    html = web_for("alice").get(reverse("instance-detail", args=[world["prod"].pk])).content.decode()
    assert "intern" not in html


def test_search_finds_requests_by_id_role_and_schema_within_scope(web_for, world):
    pk = world["request"].pk
    alice = web_for("alice")
    by_id = alice.get(reverse("request-search"), {"q": f"#{pk}"})
    assert by_id.status_code == 302 and by_id["Location"] == reverse("request-detail", args=[pk])
    assert f"request-row-{pk}" in alice.get(reverse("request-search"), {"q": "reporting"}).content.decode()
    assert f"request-row-{pk}" in alice.get(reverse("request-search"), {"q": "payments"}).content.decode()
    dave = web_for("dave")
    html = dave.get(reverse("request-search"), {"q": "reporting"}).content.decode()
    assert f"request-row-{pk}" not in html and "No request matches" in html


def test_search_matches_names_where_words_start_and_reads_the_index(people):
    from django.db import connection

    from portal.models import ChangeRequest
    from portal.models.request import SEARCH_TEXT
    from portal.selectors.search import _WordsStartLike, request_search

    # given a request for the role app_reporting_ro in schema ledger_2024
    change = given_request(requester=people["alice"], instance=dev_instance(),
                           payload={"role": "app_reporting_ro", "database": "app", "schema": "ledger_2024",
                                    "privileges": ["SELECT"], "tables": "all"})
    # then the starts of its words find it, as typed or in capitals; the middle of a word does not
    for query in ("app_reporting", "reporting_r", "LEDGER_20", "ledger", "ro"):
        assert [r.pk for r in request_search(people["alice"], query)] == [change.pk], query
    for query in ("porting", "edger", "reporting ledger"):
        assert request_search(people["alice"], query) == [], query
    assert [r.pk for r in request_search(people["alice"], "_ro")] == [change.pk]  # the words: ro
    # and the words are looked up in the GIN index (bench/scale.py: flat in the number of requests)
    query = (ChangeRequest.objects.alias(search_text=SEARCH_TEXT).filter(search_text__contains="ledger")
             .filter(_WordsStartLike("ledger")).order_by())
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        # A handful of rows: the planner would read them all, by a sequential scan or, depending on the
        # table's statistics after earlier tests, a walk of the primary key's index. With both off only
        # a bitmap scan is left, and the GIN index is the one that can serve the words' condition.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "request_search_idx" in plan


def test_auditor_home_goes_to_the_audit_log_when_installed(web_for, world):
    from django.urls import NoReverseMatch

    response = web_for("carol").get(reverse("home"))
    try:
        audit_log = reverse("audit-log")
    except NoReverseMatch:
        assert response.status_code == 200
    else:
        assert response.status_code == 302 and response["Location"] == audit_log


def test_failed_registration_is_explained_and_keeps_the_input(web_for, managed_cluster):
    from portal.models import Instance

    response = web_for("admin").post(reverse("instance-register"), {
        "name": "ext-bad", "environment": "staging", "host": "127.0.0.1", "port": managed_cluster.port,
        "database": "postgres", "admin_user": "postgres", "admin_password": "wrong-password"})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="registration-failed"' in html and "password authentication failed" in html
    assert 'id="registration-hint"' in html and "user name or password" in html
    assert 'value="ext-bad"' in html and "wrong-password" not in html  # the password is never echoed
    assert not Instance.objects.filter(name="ext-bad").exists()


def test_registration_outside_allowed_targets_says_nothing_was_tried(web_for):
    response = web_for("admin").post(reverse("instance-register"), {
        "name": "ext-far", "environment": "dev", "host": "192.0.2.1", "port": 5432,
        "database": "postgres", "admin_user": "postgres", "admin_password": "x"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "PORTAL_ALLOWED_TARGETS" in html and 'id="id_host_error"' in html


def test_each_dashboard_chart_says_so_when_it_has_nothing_to_show(web_for, people):
    from datetime import timedelta

    from django.utils import timezone

    # given a portal with no request, no apply and no drift: each chart explains its emptiness
    html = web_for("admin").get(reverse("home")).content.decode()
    for empty in ("No requests in the last 14 days.", "No request applied in the last 14 days.", "No open drift"):
        assert empty in html
    assert "<canvas" not in html  # an empty state, not empty axes (#19)
    # when a request was applied today, 12 minutes after it was submitted
    now = timezone.now()
    applied = given_request(requester=people["alice"], instance=dev_instance(), status="applied", applied_at=now)
    type(applied).objects.filter(pk=applied.pk).update(created_at=now - timedelta(minutes=12))
    response = web_for("admin").get(reverse("home"))
    # then the request and median charts have data and no empty note; drift still has none
    html = response.content.decode()
    assert "No requests in the last 14 days." not in html and "No request applied in the last 14 days." not in html
    assert "No open drift" in html and html.count("<canvas") == 2
    assert response.context["charts"]["median_minutes"][-1] == 12.0


def test_an_instances_recent_requests_leave_out_the_instance_column(web_for, world):
    # given alice's request on the dev instance
    html = web_for("alice").get(reverse("instance-detail", args=[world["dev"].pk])).content.decode()
    recent = html.split('id="recent-title"')[1]
    # then its row is listed without repeating the instance the page is about
    assert f'id="request-row-{world["request"].pk}"' in recent
    headers = recent.split("<thead>")[1].split("</thead>")[0]
    assert '<th scope="col">Instance</th>' not in headers and '<th scope="col">Requester</th>' in headers
    # while the request list still names each request's instance
    listing = web_for("alice").get(reverse("request-list")).content.decode()
    assert '<th scope="col">Instance</th>' in listing
