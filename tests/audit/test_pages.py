"""Auditor screens: the log with filters, the event drawer, verify now, exports, entitlements."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from tests.audit.world import build_world

PAGES = ["audit-log", "audit-exports", "audit-verify-page"]


def test_an_auditors_home_is_the_audit_log(people, web_for):
    response = web_for("carol").get(reverse("home"))
    assert response.status_code == 302 and response["Location"] == reverse("audit-log")


@pytest.mark.parametrize("username", ["alice", "dave", "bob"])
@pytest.mark.parametrize("page", PAGES)
def test_requesters_and_reviewers_get_403_on_audit_pages(people, web_for, username, page):
    assert web_for(username).get(reverse(page)).status_code == 403


def test_audit_nav_links_exist_for_carol(people, web_for):
    body = web_for("carol").get(reverse("audit-log")).content.decode()
    for page in PAGES + ["entitlements"]:
        assert f'href="{reverse(page)}"' in body


def test_the_log_filters_by_request_and_opens_an_event(people, web_for):
    world = build_world(people)
    client = web_for("carol")
    body = client.get(reverse("audit-log"), {"request": world.grant_request.pk}).content.decode()
    events = AuditEvent.objects.filter(request_id=world.grant_request.pk)
    for event in events:
        assert f'href="{reverse("audit-event", args=[event.seq])}"' in body
    other = AuditEvent.objects.filter(request_id=world.role_request.pk).first()
    assert f'href="{reverse("audit-event", args=[other.seq])}"' not in body
    assert f"format=pdf&amp;request={world.grant_request.pk}" in body  # exports of the filtered view
    statement = events.get(action="sql.executed", statement__startswith="GRANT SELECT")
    drawer = client.get(reverse("audit-event", args=[statement.seq]), HTTP_HX_REQUEST="true").content.decode()
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA public" in drawer and statement.hash in drawer
    assert "<html" not in drawer  # a partial for the drawer


def test_keyset_paging_reaches_older_events(people, web_for):
    build_world(people)
    client = web_for("carol")
    first = client.get(reverse("audit-log"))
    newest = first.context["events"]
    assert len(newest) >= 10
    older_url = first.context["older_url"]
    if older_url:  # there are more than one page of events in this database
        second = client.get(reverse("audit-log") + older_url).context["events"]
        assert second[0].seq < newest[-1].seq


def test_bad_filter_is_shown_next_to_its_field(people, web_for):
    response = web_for("carol").get(reverse("audit-log"), {"since": "last tuesday"})
    assert response.status_code == 200
    assert "must be an ISO 8601 date" in response.content.decode()


def test_verify_now_shows_ok_then_the_broken_seq(people, web_for):
    world = build_world(people)
    client = web_for("carol")
    ok = client.post(reverse("audit-verify-page"), HTTP_HX_REQUEST="true").content.decode()
    assert "OK" in ok and AuditEvent.objects.order_by("-seq").first().prev_hash in ok
    target = AuditEvent.objects.filter(request_id=world.grant_request.pk).order_by("seq").first()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [target.seq])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    broken = client.post(reverse("audit-verify-page"), HTTP_HX_REQUEST="true").content.decode()
    assert f"BROKEN at seq <span class=\"fs-5\">{target.seq}</span>" in broken
    page = client.get(reverse("audit-verify-page")).content.decode()
    assert f"broken at {target.seq}" in page


def test_exports_page_links_to_streamed_exports(people, web_for):
    body = web_for("carol").get(reverse("audit-exports")).content.decode()
    assert reverse("api:audit-export") + "?format=pdf&amp;since=" in body


@pytest.mark.parametrize("username,status", [("alice", 403), ("bob", 200), ("carol", 200), ("admin", 200)])
def test_entitlements_page_permissions(people, web_for, username, status):
    assert web_for(username).get(reverse("entitlements"), {"at": "2026-01-01"}).status_code == status
