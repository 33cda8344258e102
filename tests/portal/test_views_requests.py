"""Request pages: the detail (plan, timeline, live status), lists with filters and pinned query counts."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.models import Approval, Execution
from tests.portal.ui_helpers import GRANT_PLAN, dev_instance, given_request, prod_instance


@pytest.fixture
def dev(people):
    return dev_instance()


def test_detail_shows_header_plan_and_hash(web_for, people, dev):
    change = given_request(requester=people["alice"], instance=dev, risk="high", risk_reasons=["DELETE in prod"])
    html = web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()
    header = html[html.index('id="request-header"'):html.index('id="justification-title"')]
    for text in ("status-submitted", "high risk", "DELETE in prod", dev.name, "payments", "alice"):
        assert text in header, text
    # the plan: one numbered line per statement, highlighted on the server, with a copy button
    plan = html[html.index('aria-label="SQL plan"'):]
    assert plan.count("<li>") >= len(GRANT_PLAN)
    assert '<span class="k">GRANT</span>' in plan
    assert 'id="request-plan-copy"' in html
    # the hash shortened, the full value on hover
    assert f'title="{change.plan_hash}"' in html and f"{change.plan_hash[:12]}…" in html


def test_detail_names_who_filed_a_system_request(web_for, people, dev, django_assert_max_num_queries):
    # given a system request (no requester) that bob filed by hand, and one alice asked for herself
    payments = people["alice"].teams.first()
    filed = given_request(requester=None, team=payments, instance=dev, type="revoke", filed_by=people["bob"])
    own = given_request(requester=people["alice"], instance=dev)
    client = web_for("admin")
    client.get(reverse("request-detail", args=[own.pk]))  # warm the session
    with CaptureQueriesContext(connection) as own_page:
        client.get(reverse("request-detail", args=[own.pk]))
    # when the admin opens each; then the header says who filed the system one, at no extra query
    with django_assert_max_num_queries(len(own_page)):
        html = client.get(reverse("request-detail", args=[filed.pk])).content.decode()
    header = html[html.index('id="request-header"'):html.index('id="justification-title"')]
    assert re.search(r"requested by <strong>system</strong> \(filed by <strong>bob</strong>\)", header), header
    html = client.get(reverse("request-detail", args=[own.pk])).content.decode()
    header = html[html.index('id="request-header"'):html.index('id="justification-title"')]
    assert "requested by <strong>alice</strong>" in header and "filed by" not in header


def test_timeline_shows_approvals_with_the_hash_seen_and_executions(web_for, people, dev):
    change = given_request(requester=people["alice"], instance=dev, status="failed",
                           status_detail="permission denied for schema payments")
    Approval.objects.create(request=change, reviewer=people["bob"], decision="approve", comment="read only, fine",
                            plan_hash=change.plan_hash)
    Approval.objects.create(request=change, reviewer=people["admin"], decision="approve", comment="old look",
                            plan_hash="0" * 64)
    Execution.objects.create(request=change, attempt=1, worker="celery@w1", plan_hash=change.plan_hash,
                             finished_at=timezone.now(), outcome="failed", sqlstate="42501",
                             error="permission denied for schema payments",
                             statements=[{"sql": GRANT_PLAN[0], "ms": 2.5, "error": "permission denied for schema payments"}])
    html = web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()
    timeline = html[html.index('id="timeline-title"'):]
    assert "read only, fine" in timeline and f'title="{change.plan_hash}"' in timeline
    assert "on an earlier plan — no longer counts" in timeline  # the admin approved another plan
    assert 'id="execution-1"' in timeline and "celery@w1" in timeline and "2.5 ms" in timeline
    assert "42501" in timeline and "permission denied for schema payments" in timeline


@pytest.mark.parametrize("status,polls", [("approved", "1500ms"), ("queued", "1500ms"), ("running", "1500ms"),
                                          ("submitted", "5s"), ("applied", None), ("failed", None)])
def test_status_partial_polls_only_while_work_is_pending(web_for, people, dev, status, polls):
    change = given_request(requester=people["alice"], instance=dev, status=status)
    response = web_for("alice").get(reverse("request-status", args=[change.pk]), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'data-status="{status}"' in html
    if polls:
        assert f'hx-trigger="every {polls}"' in html
    else:
        assert "hx-trigger" not in html
    # the dialogs live outside the polled region, so a poll never replaces an open one
    assert 'id="modal-' not in html
    # the header badge is updated out of band on each poll
    assert 'id="header-status" hx-swap-oob="true"' in html and f"status-{status}" in html


def test_status_partial_is_out_of_scope_for_other_teams(web_for, people, dev):
    change = given_request(requester=people["alice"], instance=dev, status="running")
    assert web_for("dave").get(reverse("request-status", args=[change.pk])).status_code == 404


def test_actions_are_offered_only_to_who_may_take_them(web_for, people, dev):
    change = given_request(requester=people["alice"], instance=dev)
    alice = web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="open-cancel"' in alice and 'id="open-approve"' not in alice  # never self-approval
    bob = web_for("bob").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="open-approve"' in bob and 'id="open-reject"' in bob and 'id="open-cancel"' not in bob
    carol = web_for("carol").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="request-actions"' not in carol


def test_retry_is_offered_to_reviewers_on_failed_requests(web_for, people, dev):
    change = given_request(requester=people["alice"], instance=dev, status="failed")
    assert 'id="open-retry"' in web_for("bob").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="open-retry"' not in web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()


def test_approving_in_prod_restates_what_where_and_which_environment(web_for, people):
    prod = prod_instance()
    change = given_request(requester=people["alice"], instance=prod, risk="high", risk_reasons=["write access in prod"])
    html = web_for("bob").get(reverse("request-detail", args=[change.pk])).content.decode()
    modal = html[html.index('id="modal-approve"'):]
    modal = modal[:modal.index("</form>")]
    text = re.sub(r"<[^>]+>", " ", modal)
    text = re.sub(r"\s+", " ", text)
    assert "2 statements" in text and prod.name in text and "PRODUCTION" in text
    assert "write access in prod" in text
    assert "Approve on PRODUCTION" in text


@pytest.mark.parametrize("filters,expected", [
    ({"status": "failed"}, {"failed"}),
    ({"type": "role"}, {"role"}),
    ({}, {"submitted", "failed", "role"}),
])
def test_request_list_filters(web_for, people, dev, filters, expected):
    submitted = given_request(requester=people["alice"], instance=dev)
    failed = given_request(requester=people["alice"], instance=dev, status="failed")
    role = given_request(requester=people["alice"], instance=dev, type="role", payload={"name": "svc", "login": True},
                         plan=['CREATE ROLE "svc" LOGIN'])
    html = web_for("bob").get(reverse("request-list"), filters).content.decode()
    shown = {name for name, r in (("submitted", submitted), ("failed", failed), ("role", role))
             if f'id="request-row-{r.pk}"' in html}
    assert shown == expected


def test_request_list_filters_by_team_and_instance(web_for, people, dev):
    other = dev_instance("dev-two")
    mine = given_request(requester=people["alice"], instance=dev)
    theirs = given_request(requester=people["dave"], instance=other)
    html = web_for("bob").get(reverse("request-list"), {"team": mine.team_id}).content.decode()
    assert f'request-row-{mine.pk}"' in html and f'request-row-{theirs.pk}"' not in html
    html = web_for("bob").get(reverse("request-list"), {"instance": other.pk}).content.decode()
    assert f'request-row-{mine.pk}"' not in html and f'request-row-{theirs.pk}"' in html


def test_developer_list_holds_only_their_teams_requests(web_for, people, dev):
    mine = given_request(requester=people["alice"], instance=dev)
    theirs = given_request(requester=people["dave"], instance=dev)
    html = web_for("alice").get(reverse("request-list")).content.decode()
    assert f'request-row-{mine.pk}"' in html and f'request-row-{theirs.pk}"' not in html


def test_request_list_pages(web_for, people, dev):
    made = [given_request(requester=people["alice"], instance=dev) for _ in range(30)]
    client = web_for("alice")
    first = client.get(reverse("request-list")).content.decode()
    second = client.get(reverse("request-list"), {"page": 2}).content.decode()
    assert f'request-row-{made[-1].pk}"' in first and f'request-row-{made[0].pk}"' not in first
    assert f'request-row-{made[0].pk}"' in second and 'id="page-prev"' in second


def test_empty_filtered_list_explains_itself(web_for, people, dev):
    html = web_for("alice").get(reverse("request-list"), {"status": "applied"}).content.decode()
    assert "No request matches these filters" in html


# Measured with 20 requests: list 12, queue 9, home 15 (session, user, groups, nav, page; the nav's
# review count is one COUNT; the dashboard's charts fold the request counters' deltas, then read the
# counters, the kept days' medians and today's: tests/portal/test_dashboard_counts.py).
PINNED = {"request-list": 13, "review-queue": 10, "home": 15}


@pytest.mark.parametrize("url_name", sorted(PINNED))
def test_list_pages_have_pinned_query_counts(web_for, people, dev, django_assert_max_num_queries, url_name):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def add(n):
        for i in range(n):
            given_request(requester=people["alice" if i % 2 else "dave"], instance=dev,
                          risk=["low", "medium", "high"][i % 3])

    client = web_for("bob")
    add(5)
    client.get(reverse(url_name))  # warm the session
    with CaptureQueriesContext(connection) as few:
        client.get(reverse(url_name))
    add(15)
    with django_assert_max_num_queries(PINNED[url_name]):
        response = client.get(reverse(url_name))
    assert response.status_code == 200
    with CaptureQueriesContext(connection) as many:
        client.get(reverse(url_name))
    assert len(many.captured_queries) == len(few.captured_queries)  # no query per row


def test_review_queue_is_sorted_by_risk_then_age_and_rows_expand_to_the_plan(web_for, people, dev):
    old_low = given_request(requester=people["alice"], instance=dev, risk="low")
    high = given_request(requester=people["alice"], instance=dev, risk="high", risk_reasons=["DELETE on all tables"])
    medium = given_request(requester=people["dave"], instance=dev, risk="medium")
    html = web_for("bob").get(reverse("review-queue")).content.decode()
    order = [html.index(f'id="review-{r.pk}"') for r in (high, medium, old_low)]
    assert order == sorted(order)
    # each row carries its plan (expandable), its approve / reject dialogs with a comment box, and keys
    row = html[html.index(f'id="review-{high.pk}"'):html.index(f'id="review-{medium.pk}"')]
    assert f'id="plan-row-{high.pk}"' in row and "<span class=\"k\">GRANT</span>" in row
    assert f'data-bs-target="#modal-approve-{high.pk}"' in row and f'data-bs-target="#modal-reject-{high.pk}"' in row
    assert f'id="comment-approve-{high.pk}"' in html and f'id="comment-reject-{high.pk}"' in html
    assert "DELETE on all tables" in row  # the rule that made it high


def test_review_queue_pages_and_counts_every_pending_request_in_sql(web_for, people, dev,
                                                                   django_assert_max_num_queries):
    from portal.views.reviews import PAGE_SIZE

    # given more pending requests than a page holds (the oldest first at equal risk)
    pending = [given_request(requester=people["alice"], instance=dev) for _ in range(PAGE_SIZE + 3)]
    client = web_for("bob")
    client.get(reverse("review-queue"))  # warm the session
    # when bob opens the queue: one page of rows, the count of all in the heading and the nav
    with django_assert_max_num_queries(PINNED["review-queue"]) as first:
        html = client.get(reverse("review-queue")).content.decode()
    assert html.count('class="review-item"') == PAGE_SIZE
    assert f'id="review-{pending[0].pk}"' in html and f'id="review-{pending[-1].pk}"' not in html
    assert re.search(rf'id="queue-count">{PAGE_SIZE + 3}<', html)
    assert sum("COUNT(*)" in q["sql"] for q in first.captured_queries) == 1  # the queue's and the nav's
    assert 'id="page-next"' in html
    # then the next page holds the rest, keys and dialogs included
    html = client.get(reverse("review-queue"), {"page": 2}).content.decode()
    assert html.count('class="review-item"') == 3 and f'id="review-{pending[-1].pk}"' in html
    assert f'id="modal-approve-{pending[-1].pk}"' in html and 'id="page-prev"' in html


def test_review_queue_approve_returns_to_the_queue(web_for, people, managed_instance):
    change = given_request(requester=people["alice"], instance=managed_instance, type="schema",
                           payload={"database": "app", "name": "q_schema"},
                           plan=['CREATE SCHEMA "q_schema" AUTHORIZATION "q_owner"'])
    response = web_for("bob").post(reverse("request-action", args=[change.pk, "approve"]),
                                   {"comment": "ok", "next": reverse("review-queue")})
    assert response.status_code == 302 and response["Location"] == reverse("review-queue")


@pytest.mark.parametrize("username,present,absent", [
    ("alice", ['id="recent-title"', 'id="access-title"', 'id="home-new-request"'], ['id="dashboard-charts"']),
    ("bob", ['id="queue-title"', 'id="dashboard-charts"', 'id="drift-title"'], ['id="admin-teams-title"']),
    ("admin", ['id="dashboard-charts"', 'id="admin-instances-title"', 'id="admin-teams-title"'], []),
])
def test_home_per_persona(web_for, people, dev, username, present, absent):
    html = web_for(username).get(reverse("home")).content.decode()
    for marker in present:
        assert marker in html, marker
    for marker in absent:
        assert marker not in html, marker


def test_status_poll_is_cheap(web_for, people, dev, django_assert_max_num_queries):
    # the poll runs every 1.5 s per open page: no navigation, no review count, only the request
    for _ in range(10):
        given_request(requester=people["dave"], instance=dev)
    change = given_request(requester=people["alice"], instance=dev, status="running")
    client = web_for("bob")
    client.get(reverse("request-status", args=[change.pk]), HTTP_HX_REQUEST="true")
    # measured: 10 (session read and save, user, groups, the request with its approvals and executions,
    # the secret); the navigation and the review count are not computed for htmx partials
    with django_assert_max_num_queries(10):
        response = client.get(reverse("request-status", args=[change.pk]), HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 1500ms"' in response.content.decode()
    assert 'id="review-count"' not in response.content.decode()
