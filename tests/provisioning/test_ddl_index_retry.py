"""CREATE INDEX CONCURRENTLY that fails leaves an INVALID index; the retry must build it again.

Real cluster, real workers: a unique build over duplicate values fails (and PostgreSQL keeps the
half-built index, INVALID); a build cut short by the index steps' own statement_timeout fails
the same way. Once the cause is gone, the reviewer's retry ends with a VALID index.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from portal.choices import RequestStatus
from portal.models import Execution, Team
from portal.services.requests import request_submit
from provisioning import connections
from tests.portal.requests_helpers import apply_for_test, unique

pytestmark = pytest.mark.slow


@pytest.fixture
def team_table(transactional_db, people, managed_instance):
    """A schema of alice's team (applied for real) holding a table t(x int) with a duplicate value."""
    request = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                             team=Team.objects.get(name="payments"), justification="set up",
                             payload={"database": "app", "name": unique("idx")})
    apply_for_test(request)
    schema = request.payload["name"]
    with connections.connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (x int)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("INSERT INTO {}.t VALUES (1), (1), (2)").format(sql.Identifier(schema)))
        # the team's table: the index steps run as the schema's owner role, which must own it
        conn.execute(sql.SQL("ALTER TABLE {}.t OWNER TO {}").format(
            sql.Identifier(schema), sql.Identifier(request.payload["owner_role"])))
    return schema


def index_state(instance, schema: str, name: str) -> bool | None:
    """pg_index.indisvalid of schema.name, None when there is no such index."""
    with connections.connect(instance, "app") as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [schema, name]).fetchone()
    return None if row is None else row[0]


def submit_unique_index(api_for, schema: str) -> int:
    body = {"type": "ddl", "instance": "demo", "team": "payments", "justification": "unique x",
            "payload": {"database": "app", "schema": schema, "sql": "CREATE UNIQUE INDEX CONCURRENTLY t_x_key ON t (x)"}}
    response = api_for("alice").post("/api/v1/requests/", body, format="json")
    assert response.status_code == 201, response.json()
    request_id = response.json()["id"]
    if response.json()["status"] == RequestStatus.SUBMITTED:
        approved = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {"comment": "ok"}, format="json")
        assert approved.status_code == 200, approved.json()
    return request_id


def retry_and_check_valid(api_for, wait_for_status, managed_instance, schema: str, request_id: int) -> None:
    retried = api_for("bob").post(f"/api/v1/requests/{request_id}/retry/", {"comment": "duplicates removed"},
                                  format="json")
    assert retried.status_code == 200, retried.json()
    request = wait_for_status(request_id, {"applied", "failed"})
    assert request.status == RequestStatus.APPLIED, request.status_detail
    # then the index is there and VALID, and it enforces uniqueness
    assert index_state(managed_instance, schema, "t_x_key") is True
    with connections.connect(managed_instance, "app", autocommit=True) as conn, \
            pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(sql.SQL("INSERT INTO {}.t VALUES (2)").format(sql.Identifier(schema)))


def test_a_failed_unique_build_leaves_an_invalid_index_and_the_retry_builds_it_valid(
    team_table, api_for, managed_instance, celery_workers, wait_for_status
):
    schema = team_table
    worker = celery_workers.start(beat=False)
    try:
        # given alice's CREATE UNIQUE INDEX CONCURRENTLY over a column with a duplicate, approved
        request_id = submit_unique_index(api_for, schema)
        # when the worker applies it, the build fails and PostgreSQL keeps the index, INVALID
        request = wait_for_status(request_id, {"applied", "failed"})
        assert request.status == RequestStatus.FAILED
        # the condition, not the server's text (which quotes the duplicate values)
        assert "unique_violation (SQLSTATE 23505)" in request.status_detail
        assert "(x)=(1)" not in request.status_detail
        assert index_state(managed_instance, schema, "t_x_key") is False
        # when the duplicate is removed and a reviewer retries
        with connections.connect(managed_instance, "app", autocommit=True) as conn:
            conn.execute(sql.SQL("DELETE FROM {}.t WHERE ctid IN (SELECT max(ctid) FROM {}.t WHERE x = 1)").format(
                sql.Identifier(schema), sql.Identifier(schema)))
        retry_and_check_valid(api_for, wait_for_status, managed_instance, schema, request_id)
        # and the retry dropped the INVALID index before building it again (the step was not skipped)
        last = Execution.objects.filter(request_id=request_id).order_by("-attempt").first()
        drop = next(row for row in last.statements if row["sql"].startswith("DROP INDEX CONCURRENTLY"))
        assert drop["error"] == "" and "skipped" not in drop
    finally:
        worker.stop()


def test_index_builds_have_their_own_statement_timeout_and_a_cut_short_build_is_retried(
    team_table, api_for, managed_instance, celery_workers, wait_for_status
):
    schema = team_table
    # given a table big enough that its index build takes more than a millisecond, without duplicates
    with connections.connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}.t").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("INSERT INTO {}.t SELECT g FROM generate_series(1, 300000) g").format(
            sql.Identifier(schema)))
    # and a worker whose index steps may run 1 ms (the plan's own statement_timeout stays 60 s)
    hasty = celery_workers.start(beat=False, env={"PORTAL_INDEX_STATEMENT_TIMEOUT_MS": "1"})
    try:
        request_id = submit_unique_index(api_for, schema)
        # when it applies the request, the build is cancelled by that timeout
        request = wait_for_status(request_id, {"applied", "failed"})
    finally:
        hasty.stop()
    assert request.status == RequestStatus.FAILED
    assert "query_canceled (SQLSTATE 57014)" in request.status_detail
    assert index_state(managed_instance, schema, "t_x_key") is not True  # INVALID, or not created yet
    # when a worker with the default index timeout takes the reviewer's retry, the index ends VALID
    worker = celery_workers.start(beat=False)
    try:
        retry_and_check_valid(api_for, wait_for_status, managed_instance, schema, request_id)
    finally:
        worker.stop()


def test_a_first_build_skips_the_drop_and_audits_only_what_ran(
    team_table, api_for, managed_instance, celery_workers, wait_for_status
):
    from audit.models import AuditEvent

    schema = team_table
    # given a table without duplicates
    with connections.connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}.t WHERE x = 1").format(sql.Identifier(schema)))
    worker = celery_workers.start(beat=False)
    try:
        # when the unique index request is applied
        request = wait_for_status(submit_unique_index(api_for, schema), {"applied", "failed"})
    finally:
        worker.stop()
    assert request.status == RequestStatus.APPLIED, request.status_detail
    assert index_state(managed_instance, schema, "t_x_key") is True
    # then the drop-if-INVALID step was skipped (no index existed) and is not audited as executed
    execution = Execution.objects.get(request=request)
    drop = next(row for row in execution.statements if row["sql"].startswith("DROP INDEX CONCURRENTLY"))
    assert drop["skipped"] == "condition not met"
    executed = list(AuditEvent.objects.filter(request_id=request.pk, action="sql.executed")
                    .values_list("statement", flat=True))
    assert not any(text.startswith("DROP INDEX") for text in executed)
    assert any(text.startswith("CREATE UNIQUE INDEX CONCURRENTLY") for text in executed)
