"""The review queue's count stops at PENDING_COUNT_SHOWN (#23): the heading and the nav badge say
"N+" past it, every page and its Next link stay exact, and below it the count is exact as before."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from portal.selectors import requests as request_selectors
from portal.views import reviews
from tests.portal.ui_helpers import dev_instance, given_request


@pytest.fixture
def five_pending(people, monkeypatch):
    # given five pending requests, a bound of 3 and pages of 2
    monkeypatch.setattr(request_selectors, "PENDING_COUNT_SHOWN", 3)
    monkeypatch.setattr(reviews, "PENDING_COUNT_SHOWN", 3)
    monkeypatch.setattr(reviews, "PAGE_SIZE", 2)
    instance = dev_instance()
    return [given_request(requester=people["alice"], instance=instance) for _ in range(5)]


def _badge(html: str) -> str:
    return html.split('id="review-count"')[1].split(">")[1].split("<")[0]


def test_past_the_bound_the_queue_and_the_badge_say_n_plus(web_for, five_pending):
    client = web_for("bob")
    # when bob opens the queue's first page
    html = client.get(reverse("review-queue")).content.decode()
    # then heading and badge say "3+", the page has its two rows and a Next link, no page total
    assert re.search(r'id="queue-count">3\+<', html) and _badge(html) == "3+"
    assert html.count('class="review-item"') == 2 and 'id="page-next"' in html
    assert "Page 1 of" not in html
    # and on another page too (the badge counted on its own there)
    assert _badge(client.get(reverse("request-list")).content.decode()) == "3+"


def test_every_page_past_the_bound_is_reachable(web_for, five_pending):
    client = web_for("bob")
    seen, page = [], 1
    while True:
        html = client.get(reverse("review-queue"), {"page": page}).content.decode()
        seen += [int(pk) for pk in re.findall(r'id="review-(\d+)"', html)]
        if 'id="page-next"' not in html:
            break
        page += 1
    assert sorted(seen) == sorted(r.pk for r in five_pending) and page == 3
    # the last page counted to its end: its total is exact ("Page 3 of 3"), and the heading still
    # says "3+" as the badge does: one rule for both labels, whatever page counted how far
    assert "Page 3 of 3" in html
    assert re.search(r'id="queue-count">3\+<', html) and _badge(html) == "3+"


def test_a_deep_page_and_the_badge_never_disagree(web_for, five_pending):
    # the page past the bound (page 2 of 2 rows: it counts to 5, exactly) and every other page
    client = web_for("bob")
    for page in (1, 2, 3):
        html = client.get(reverse("review-queue"), {"page": page}).content.decode()
        heading = re.search(r'id="queue-count">([^<]+)<', html).group(1)
        assert heading == _badge(html) == "3+", (page, heading, _badge(html))


def test_one_label_rule(monkeypatch):
    monkeypatch.setattr(request_selectors, "PENDING_COUNT_SHOWN", 100)
    label = request_selectors.pending_count_label
    assert [label(n) for n in (0, 1, 99, 100, 101, 110, 10**6)] == ["0", "1", "99", "100", "100+", "100+", "100+"]


def test_the_count_stops_at_the_bound_or_the_page(five_pending):
    # five wait; a bound of 3 and pages of 2: page 1 counts 4 rows (one past the bound), page 2
    # counts 5 (one past its end would be 5: all there are), never every pending request
    from portal.models import ChangeRequest
    from portal.selectors.paging import BoundedCountPaginator, count_bound

    pending = ChangeRequest.objects.filter(pk__in=[r.pk for r in five_pending])
    assert BoundedCountPaginator(pending, 2, bound=count_bound("1", 2, 3)).count == 4
    assert BoundedCountPaginator(pending, 2, bound=count_bound("2", 2, 3)).count == 5
    assert BoundedCountPaginator(pending, 2, bound=count_bound("1", 2, 1)).count == 3


def test_below_the_bound_the_count_is_exact(web_for, five_pending, monkeypatch):
    monkeypatch.setattr(request_selectors, "PENDING_COUNT_SHOWN", 100)
    monkeypatch.setattr(reviews, "PENDING_COUNT_SHOWN", 100)
    html = web_for("bob").get(reverse("review-queue")).content.decode()
    assert re.search(r'id="queue-count">5<', html) and _badge(html) == "5" and "Page 1 of 3" in html
    assert request_selectors.pending_review_count(five_pending[0].requester) == 0  # alice decides none
