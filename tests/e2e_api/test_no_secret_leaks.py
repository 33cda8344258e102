"""No generated password and no instance credential anywhere: logs, responses, audit, exports.

The whole journey runs with every log captured (this process at DEBUG through caplog and the
structlog output on stdout/stderr; the real Celery worker at DEBUG through its log file) and every
response body kept: the admin registers the cluster (API and page, once refused: the credential
travels in and must never come back out), alice submits a schema and a login role, bob approves,
the worker applies,
alice reveals the password (the one place it may appear), carol exports the audit log as CSV and
JSON Lines and the PDF report. Then nothing but that one reveal may contain the password, and
nothing at all the instance's admin password.
"""

from __future__ import annotations

import logging
import secrets

import psycopg
import pytest
from psycopg import sql

from audit.models import AuditEvent

pytestmark = pytest.mark.slow


@pytest.fixture
def debug_worker(celery_workers):
    worker = celery_workers.start(env={"PORTAL_LOG_LEVEL": "DEBUG"})
    yield worker
    worker.stop()


def body_of(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def test_the_whole_journey_leaks_no_password_and_no_instance_credential(
    transactional_db, people, api_for, web_for, managed_cluster, managed_instance, debug_worker, wait_for_status,
    caplog, capfd,
):
    caplog.set_level(logging.DEBUG)
    suffix = secrets.token_hex(3)
    schema_name, role_name = f"leak_{suffix}", f"leak_svc_{suffix}"
    alice, bob, carol = api_for("alice"), api_for("bob"), api_for("carol")
    bodies: list[tuple[str, bytes]] = []

    def keep(label: str, response):
        bodies.append((label, body_of(response)))
        return response

    # The admin hands the portal the instance credential: refused once (no such database), then
    # registered through the API and through the page; he reads what the portal shows of them.
    admin = api_for("admin")
    registration = {"name": f"leak-{suffix}", "environment": "dev", "host": "127.0.0.1",
                    "port": managed_cluster.port, "database": "postgres", "admin_user": "postgres",
                    "admin_password": managed_cluster.admin_password}
    refused = keep("registration refused", admin.post("/api/v1/instances/", {**registration, "database": "leak_none"},
                                                      format="json"))
    assert refused.status_code == 400, refused.content
    registered = keep("registration", admin.post("/api/v1/instances/", registration, format="json"))
    assert registered.status_code == 201, registered.content
    web = web_for("admin")
    on_page = keep("registration page", web.post("/instances/register/", {**registration, "name": f"leak-web-{suffix}"}))
    assert on_page.status_code == 302, on_page.content
    keep("instance page", web.get(on_page["Location"]))
    keep("instance list page", web.get("/instances/"))
    keep("registered instance", admin.get(f"/api/v1/instances/{registered.json()['id']}/"))

    request_ids = []
    for payload_type, payload in (("schema", {"database": "app", "name": schema_name}),
                                  ("role", {"name": role_name, "login": True})):
        body = {"type": payload_type, "instance": "demo", "team": "payments", "justification": "leak check",
                "payload": payload}
        keep("preview", alice.post("/api/v1/requests/preview/", body, format="json"))
        created = keep("submit", alice.post("/api/v1/requests/", body, format="json"))
        assert created.status_code == 201, created.content
        request_id = created.json()["id"]
        request_ids.append(request_id)
        approved = keep("approve", bob.post(f"/api/v1/requests/{request_id}/approve/", {"comment": "ok"},
                                            format="json"))
        assert approved.status_code == 200, approved.content
        assert wait_for_status(request_id, {"applied", "failed"}, timeout=90).status == "applied"
    role_request = request_ids[1]

    # Everything the requester, the reviewer and the auditor can read about it, API and pages.
    for client, who in ((alice, "alice"), (bob, "bob")):
        keep(f"list {who}", client.get("/api/v1/requests/"))
        for request_id in request_ids:
            keep(f"detail {who}", client.get(f"/api/v1/requests/{request_id}/"))
    keep("instances", alice.get("/api/v1/instances/"))
    keep("instance", api_for("admin").get(f"/api/v1/instances/{managed_instance.pk}/"))
    revealed = alice.get(f"/api/v1/requests/{role_request}/secret/")
    assert revealed.status_code == 200
    password = revealed.json()["password"]
    keep("second reveal", alice.get(f"/api/v1/requests/{role_request}/secret/"))
    for who in ("alice", "bob"):
        web = web_for(who)
        keep(f"page {who}", web.get(f"/requests/{role_request}/"))
        keep(f"status {who}", web.get(f"/requests/{role_request}/status/"))
        keep(f"reveal {who}", web.post(f"/requests/{role_request}/reveal/"))
    for export_format in ("csv", "jsonl", "pdf"):
        exported = keep(f"export {export_format}", carol.get(f"/api/v1/audit/export/?format={export_format}"))
        assert exported.status_code == 200
    keep("audit events", carol.get("/api/v1/audit/events/?page_size=500"))
    keep("entitlements", carol.get("/api/v1/entitlements/"))

    # The password works (it is the real one), so finding it nowhere means something.
    login = {"host": "127.0.0.1", "port": managed_cluster.port, "dbname": "app", "user": role_name,
             "password": password, "passfile": "/dev/null"}
    psycopg.connect(**login).close()

    captured = capfd.readouterr()
    texts = {
        "captured log records": "\n".join(f"{r.getMessage()} {r.msg!r} {r.args!r}" for r in caplog.records),
        "stdout/stderr": captured.out + captured.err,
        "worker log": debug_worker.log_text(),
        "audit events": "\n".join(f"{e.statement} {e.details}" for e in AuditEvent.objects.all()),
    }
    texts.update({f"response: {label}": body.decode(errors="replace") for label, body in bodies})
    assert caplog.records, "the web side's logs were captured"
    assert "sql.executed" in "".join(AuditEvent.objects.values_list("action", flat=True))
    assert texts["worker log"].strip(), "the worker's log was captured"
    for secret, what in ((password, "the generated password"),
                         (managed_cluster.admin_password, "the instance's admin password")):
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"{what} found in: {', '.join(leaks)}"
    # The PDF's text is compressed; the CSV and JSONL exports of the same events are checked above.


@pytest.fixture(autouse=True)
def _drop_leak_objects(managed_cluster):
    yield
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'leak\\_%'")]
        for schema in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'leak\\_%'").fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {s} CASCADE").format(s=sql.Identifier(schema[0])))
        for role in names:
            conn.execute(sql.SQL("DROP OWNED BY {r}").format(r=sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {r}").format(r=sql.Identifier(role)))
