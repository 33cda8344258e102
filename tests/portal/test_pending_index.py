"""The review queue's page reads request_pending_idx in order (#23): the index's expression and the
queue's ORDER BY are the same, so PostgreSQL can stop after a page instead of sorting every pending
request. A drift between the two (a new risk level in one place only) fails here, not at scale."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from portal.selectors.requests import pending_reviews_queryset
from tests.api.test_query_counts import submit_many


@pytest.mark.parametrize("persona", ["bob", "admin"])
def test_the_queue_page_reads_the_pending_index_in_its_order(people, managed_instance, persona):
    # given a few submitted requests (too few for the planner to prefer the index on its own)
    submit_many(people, managed_instance, 3)
    page = pending_reviews_queryset(people[persona])[:20]
    sql, params = page.query.sql_with_params()
    # when the planner may not sort or scan the table whole
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_incremental_sort = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # then it walks the queue's index, and no Sort node orders the requests
    assert "request_pending_idx" in plan, plan
    assert "Sort Key" not in plan, plan
    # and the page is still the queue: every submitted request, highest risk first
    assert len(list(page)) == 3
