"""The request list's count stops at a bound: exact below it, a flagged lower bound above it,
and every page (and its `next`) still reachable and scoped to the caller."""

from __future__ import annotations

import pytest

from portal.api.pagination import BoundedCountPagination
from tests.api.test_query_counts import submit_many


@pytest.fixture
def five_requests(people, managed_instance, monkeypatch):
    monkeypatch.setattr(BoundedCountPagination, "COUNT_BOUND", 3)
    submit_many(people, managed_instance, 5)


def test_count_above_the_bound_is_a_flagged_lower_bound(api_for, five_requests):
    # given five requests of alice's team and a bound of 3
    # when she reads the first page of two
    body = api_for("alice").get("/api/v1/requests/?page_size=2").json()
    # then the count stops one row past the bound, says so, and the next page is linked
    assert (body["count"], body["count_exact"], len(body["results"])) == (4, False, 2)
    assert body["next"] is not None


def test_every_page_past_the_bound_is_reachable_and_the_last_is_exact(api_for, five_requests):
    client = api_for("alice")
    # given the bound of 3, when alice follows `next` from the first page
    seen, url = [], "/api/v1/requests/?page_size=2"
    while url:
        body = client.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    # then she read all five, newest first, and the last page counted them exactly
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    assert (body["count"], body["count_exact"]) == (5, True)


def test_count_below_the_bound_is_exact(api_for, five_requests, monkeypatch):
    monkeypatch.setattr(BoundedCountPagination, "COUNT_BOUND", 1000)
    body = api_for("alice").get("/api/v1/requests/").json()
    assert (body["count"], body["count_exact"], len(body["results"])) == (5, True, 5)


def test_bounded_count_stays_scoped_to_the_caller(api_for, five_requests):
    # dave leads another team and reviews nothing: none of payments' requests are counted for him
    body = api_for("dave").get("/api/v1/requests/?page_size=2").json()
    assert (body["count"], body["count_exact"], body["results"], body["next"]) == (0, True, [], None)


@pytest.mark.parametrize("page", ["last", "9", "0", "x", "-1", "1e3", "99999999999999999999999999", "\u0669"])  # the last: an Arabic-Indic 9
def test_last_and_out_of_range_pages_answer_as_before(api_for, five_requests, page):
    response = api_for("alice").get(f"/api/v1/requests/?page_size=2&page={page}")
    if page == "last":
        assert response.status_code == 200 and response.json()["count_exact"] is True
        assert len(response.json()["results"]) == 1
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("page", ["99999999999999999999999999", "x", "-1"])
def test_the_review_queue_answers_any_page_number_without_a_500(web_for, five_requests, page):
    # a reviewer's queue counts up to a bound as the API list does; a hostile page is the last page
    assert web_for("bob").get(f"/reviews/?page={page}").status_code == 200
