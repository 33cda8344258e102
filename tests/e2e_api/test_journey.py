"""The product's core journey over the API, applied by a real Celery worker on the real cluster.

alice asks for a schema `payments_app` (database app), a login role `payments_svc` and read
access for it on the schema; bob approves each; the worker applies them; alice reveals the
password once and logs in to `demo` with it, reads the schema (tables created later too),
cannot create in `public` nor in the schema; dave sees none of it.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors, sql

from audit.models import AuditEvent
from portal.models import Grant, ManagedRole, ManagedSchema
from provisioning.models import OutboxMessage

pytestmark = pytest.mark.slow


def submit_and_approve(api_for, wait_for_status, body: dict) -> dict:
    alice, bob = api_for("alice"), api_for("bob")
    created = alice.post("/api/v1/requests/", body, format="json")
    assert created.status_code == 201, created.json()
    request_id = created.json()["id"]
    approved = bob.post(f"/api/v1/requests/{request_id}/approve/", {"comment": "looks right"}, format="json")
    assert approved.status_code == 200, approved.json()
    assert approved.json()["status"] == "queued"
    assert OutboxMessage.objects.filter(request_id=request_id).count() == 1
    request = wait_for_status(request_id, {"applied", "failed"}, timeout=90)
    assert request.status == "applied", request.status_detail
    detail = alice.get(f"/api/v1/requests/{request_id}/").json()
    assert detail["status"] == "applied" and detail["executions"][-1]["outcome"] == "applied"
    return detail


def test_alice_gets_a_schema_a_login_role_and_read_access_and_logs_in(
    transactional_db, people, api_for, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    common = {"instance": "demo", "team": "payments"}
    schema = submit_and_approve(api_for, wait_for_status, {
        **common, "type": "schema", "justification": "payments service data",
        "payload": {"database": "app", "name": "payments_app"}})
    assert schema["risk"] == "low"
    role = submit_and_approve(api_for, wait_for_status, {
        **common, "type": "role", "justification": "the payments service connects with it",
        "payload": {"name": "payments_svc", "login": True, "connection_limit": 10}})
    assert role["risk"] == "medium"
    assert "<generated at apply time>" in role["plan"][-1]
    grant = submit_and_approve(api_for, wait_for_status, {
        **common, "type": "grant", "justification": "the service reads its data",
        "payload": {"role": "payments_svc", "database": "app", "schema": "payments_app",
                    "privileges": ["SELECT"], "default_privileges": True}})
    assert grant["plan"][0] == 'GRANT USAGE ON SCHEMA "payments_app" TO "payments_svc"'

    # the portal recorded what it created
    assert ManagedSchema.objects.get(name="payments_app").owner_role == "payments_app_owner"
    assert ManagedRole.objects.get(name="payments_svc").login is True
    assert Grant.objects.get(request_id=grant["id"]).privileges == ["SELECT"]

    # bob may see the request but not the password; alice reveals it once
    assert api_for("bob").get(f"/api/v1/requests/{role['id']}/secret/").status_code == 403
    revealed = api_for("alice").get(f"/api/v1/requests/{role['id']}/secret/")
    assert revealed.status_code == 200 and "no-store" in revealed["Cache-Control"].split(", ")
    password = revealed.json()["password"]
    assert api_for("alice").get(f"/api/v1/requests/{role['id']}/secret/").status_code == 410

    # the owner creates a table after the grant: default privileges cover it
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as admin:
        admin.execute("SET ROLE payments_app_owner")
        admin.execute("CREATE TABLE payments_app.ledger (id int)")
        admin.execute("INSERT INTO payments_app.ledger VALUES (1)")

    login = {"host": "127.0.0.1", "port": managed_cluster.port, "dbname": "app", "user": "payments_svc",
             "password": password, "passfile": "/dev/null"}
    with psycopg.connect(**login, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'payments_app'").fetchone()[0] == 1
        assert conn.execute("SELECT id FROM payments_app.ledger").fetchall() == [(1,)]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.nope (id int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE payments_app.nope (id int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO payments_app.ledger VALUES (2)")
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolconnlimit "
            "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert attributes == (False, False, False, False, False, 10)

    # a wrong password is refused
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**{**login, "password": password + "x"}).close()

    # dave sees none of alice's requests
    dave = api_for("dave")
    assert dave.get("/api/v1/requests/").json()["results"] == []
    for request_id in (schema["id"], role["id"], grant["id"]):
        assert dave.get(f"/api/v1/requests/{request_id}/").status_code == 404
        assert dave.get(f"/api/v1/requests/{request_id}/secret/").status_code == 404

    # every step is in the audit log, and the password is in none of it
    actions = set(AuditEvent.objects.filter(request_id=role["id"]).values_list("action", flat=True))
    assert {"request.submitted", "request.approved", "request.queued", "request.applied"} <= actions
    for event in AuditEvent.objects.all():
        assert password not in f"{event.statement} {event.details}"


@pytest.fixture(autouse=True)
def _drop_journey_objects(managed_cluster):
    """The cluster lives for the session: leave it without the journey's fixed names."""
    yield
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS payments_app CASCADE")
        for role in ("payments_svc", "payments_app_owner"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists:
                conn.execute(sql.SQL("DROP OWNED BY {r}").format(r=sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {r}").format(r=sql.Identifier(role)))
