"""Break-glass lists: the queries of the API list and of the review queue do not grow with the rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.choices import Environment, InstanceKind, RequestStatus
from portal.models import BreakGlass, ChangeRequest, Instance, Team


def _break_glass_many(people, count: int) -> None:
    instance, _ = Instance.objects.get_or_create(
        name="qc-bg", defaults={"environment": Environment.DEV, "kind": InstanceKind.EXTERNAL, "host": "127.0.0.1",
                                "admin_user": "postgres"})
    team = Team.objects.get(name="payments")
    now = timezone.now()
    for index in range(count):
        request = ChangeRequest.objects.create(
            type="grant", instance=instance, team=team, requester=people["alice"], justification="qc",
            payload={"role": f"r{index}", "database": "app", "schema": "s", "privileges": ["SELECT"]},
            plan=["GRANT …"], plan_hash="0" * 64, status=RequestStatus.APPLIED, break_glass=True)
        BreakGlass.objects.create(request=request, incident_ref=f"INC-{index}", duration_minutes=30,
                                  ends_at=now + timedelta(minutes=30), review_due_at=now + timedelta(hours=24))


@pytest.mark.django_db
def test_the_break_glass_list_and_the_review_queue_cost_the_same_queries_for_1_or_20_rows(
    people, api_for, web_for, django_assert_max_num_queries
):
    _break_glass_many(people, 1)
    api, web = api_for("bob"), web_for("bob")
    with django_assert_max_num_queries(8) as one_api:
        assert api.get("/api/v1/break-glass/").status_code == 200
    with django_assert_max_num_queries(40) as one_page:
        assert web.get("/reviews/").status_code == 200
    _break_glass_many(people, 19)
    with django_assert_max_num_queries(len(one_api)):
        listed = api.get("/api/v1/break-glass/")
    assert listed.json()["count"] == 20
    with django_assert_max_num_queries(len(one_page)):
        page = web.get("/reviews/")
    assert page.content.decode().count("break-glass-badge") >= 20
