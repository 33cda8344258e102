"""API lists: the number of queries does not grow with the rows (1 row vs 20 rows)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.models import ChangeRequest, Team
from portal.services.requests import request_submit
from provisioning.models import DriftFinding


def submit_many(people, instance, count: int) -> None:
    payments = Team.objects.get(name="payments")
    start = ChangeRequest.objects.count()
    for index in range(count):
        request_submit(user=people["alice"], actor_ip=None, type="schema", instance=instance, team=payments,
                       justification="query count", payload={"database": "app", "name": f"qc_{start + index}"})


def drift_many(instance, count: int) -> None:
    start = DriftFinding.objects.count()
    DriftFinding.objects.bulk_create(
        DriftFinding(instance=instance, database="app", kind="unexpected_privilege", role=f"r{start + i}",
                     object_type="schema", object_name="s", privilege="USAGE") for i in range(count))


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(captured)


LISTS = [
    ("alice", "/api/v1/requests/", submit_many),
    ("bob", "/api/v1/requests/?status=submitted", submit_many),
    ("bob", "/api/v1/drift/", lambda people, instance, n: drift_many(instance, n)),
    ("carol", "/api/v1/audit/events/", submit_many),
]


@pytest.mark.parametrize(("persona", "url", "grow"), LISTS, ids=[url for _, url, _ in LISTS])
def test_list_queries_do_not_grow_with_rows(people, api_for, managed_instance, persona, url, grow,
                                            django_assert_max_num_queries):
    client = api_for(persona)
    grow(people, managed_instance, 1)
    with_one = queries_for(client, url)
    grow(people, managed_instance, 19)
    with django_assert_max_num_queries(with_one):
        client.get(url)
