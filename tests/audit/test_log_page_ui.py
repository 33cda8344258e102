"""The audit log page as a daily tool (#19 item 7): totals, cells that filter, timestamps to the second
with relative time, details as formatted JSON, a drawer with a title, previous / next and a permalink;
the page's query count is pinned."""

from __future__ import annotations

import html
import json

from django.urls import reverse

from audit.chainer import ensure_chained
from audit.models import AuditEvent
from audit.services import record
from tests.audit.world import build_world


def test_the_log_shows_the_total_and_cells_that_filter(people, web_for):
    # given a world with a grant request and its events
    world = build_world(people)
    request_id = world.grant_request.pk
    client = web_for("carol")
    # when carol filters by the request
    response = client.get(reverse("audit-log"), {"request": request_id})
    body = response.content.decode()
    events = AuditEvent.objects.filter(request_id=request_id)
    # then the total names every matching event, not only the page
    assert response.context["total"] == events.count()
    assert f"<strong>{events.count()}</strong> event" in body
    # and the actor, action and request cells are links that narrow the current filters
    first = events.order_by("-seq").first()
    assert html.escape(f"?request={request_id}&actor={first.actor}") in body
    assert html.escape(f"?request={request_id}&action={first.action}") in body
    plain = client.get(reverse("audit-log")).content.decode()
    assert html.escape(f"?request={request_id}") in plain
    # and a time is shown to the second with the relative time under it
    assert first.ts.strftime("%Y-%m-%d %H:%M:%S") in body and " ago</time>" in body or "just now</time>" in body


def test_an_actor_cell_link_filters_by_that_actor(people, web_for):
    build_world(people)
    client = web_for("carol")
    response = client.get(reverse("audit-log"), {"actor": "alice"})
    assert response.status_code == 200
    assert {e.actor for e in response.context["events"]} == {"alice"}


def test_the_drawer_has_a_title_neighbours_a_permalink_and_json_details(people, web_for):
    # given three events in a row, the middle one with nested details
    before = record("test.ui", actor="system", outcome="ok", details={"n": 1})
    middle = record("test.ui", actor="system", outcome="ok", details={"zeta": [1, 2], "alpha": {"b": "x<y"}})
    after = record("test.ui", actor="system", outcome="ok", details={"n": 3})
    client = web_for("carol")
    # when the drawer opens the middle one (htmx)
    drawer = client.get(reverse("audit-event", args=[middle.seq]), HTTP_HX_REQUEST="true").content.decode()
    # then its title names the event (swapped out of band into the drawer's header)
    assert 'id="event-drawer-title" hx-swap-oob="true"' in drawer and f"Event {middle.seq}" in drawer
    # and previous / next load the neighbours into the drawer, with a permalink to the event's page
    assert f'hx-get="{reverse("audit-event", args=[before.seq])}"' in drawer
    assert f'hx-get="{reverse("audit-event", args=[after.seq])}"' in drawer
    assert f'id="event-permalink" href="{reverse("audit-event", args=[middle.seq])}"' in drawer
    # and the details are indented JSON with sorted keys, escaped
    details = drawer[drawer.index('id="event-details-'):]
    text = html.unescape(_strip_tags(details[details.index(">") + 1:details.index("</pre>")]))
    assert json.loads(text) == {"alpha": {"b": "x<y"}, "zeta": [1, 2]}
    assert text.index('"alpha"') < text.index('"zeta"') and '\n  "alpha"' in text
    assert "x<y" not in details  # escaped by the highlighter
    # and the full page of an event has the same navigation (no out-of-band title)
    page = client.get(reverse("audit-event", args=[middle.seq])).content.decode()
    assert 'id="event-previous"' in page and 'id="event-next"' in page and "hx-swap-oob" not in page


def test_the_newest_event_has_no_next(people, web_for):
    record("test.ui", actor="system", outcome="ok", details={})
    newest = record("test.ui", actor="system", outcome="ok", details={})
    drawer = web_for("carol").get(reverse("audit-event", args=[newest.seq]), HTTP_HX_REQUEST="true").content.decode()
    assert 'id="event-next"' not in drawer and 'id="event-previous"' in drawer


def test_the_log_page_query_count_is_pinned(people, web_for, django_assert_max_num_queries):
    build_world(people)
    client = web_for("carol")
    client.get(reverse("audit-log"))
    ensure_chained()  # what the commit of the first read does outside a test's transaction (on_commit)
    # session, user, groups, nav, memberships, page (with the chainer's probe for pending events),
    # total, actions, instances, the recorded read
    with django_assert_max_num_queries(16):
        response = client.get(reverse("audit-log"), {"action": "request.*"})
    assert response.status_code == 200


def test_requesters_cannot_open_an_event_drawer(people, web_for):
    event = record("test.ui", actor="system", outcome="ok", details={})
    assert web_for("alice").get(reverse("audit-event", args=[event.seq]), HTTP_HX_REQUEST="true").status_code == 403


def _strip_tags(text: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", text)
