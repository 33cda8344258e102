"""Break-glass: an emergency grant applies at once without approval, ends by itself with its
sessions, and waits in the review queue until a reviewer acknowledges it; every refusal holds."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.test import override_settings
from django.utils import timezone
from psycopg import sql

from audit.chainer import chain_pending
from audit.models import AuditEvent
from portal.choices import Environment, RequestStatus
from portal.models import BreakGlass, ChangeRequest, Grant
from portal.services.notifications import notify_send
from provisioning.expiry import expire_grants
from provisioning.secrets import secret_reveal
from tests.fixtures.celery import wait_until
from tests.provisioning.helpers import admin_conn, approved_request, role_payload, schema_payload, unique

pytestmark = pytest.mark.slow


def verification_of(request_id: int) -> AuditEvent:
    """The worker records the verification right after it records the apply: wait for it."""
    return wait_until(lambda: AuditEvent.objects.filter(request_id=request_id,
                                                        action="grant.revocation_verified").first(),
                      timeout=30, message=f"the revocation of request {request_id} to be verified")


def _filed(body: dict, **changes) -> dict:
    return {**body, **changes}


@pytest.fixture
def payments_schema(transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    """A payments schema with a table, and a payments login role that holds nothing on it."""
    schema, role = unique("bg"), unique("oncall")
    created = [approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
               approved_request(managed_instance, "role", role_payload(role, login=True), requester=people["alice"])]
    for request in created:
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.ledger (id int)").format(sql.Identifier(schema)))
    password = secret_reveal(request=ChangeRequest.objects.get(pk=created[1].pk), user=people["alice"])
    return schema, role, password


def _body(schema: str, role: str, **changes) -> dict:
    body = {"instance": "demo", "team": "payments", "justification": "ledger stuck, need to read it",
            "incident_ref": "INC-4242", "duration_minutes": 30,
            "payload": {"role": role, "database": "app", "schema": schema, "privileges": ["SELECT"],
                        "tables": "all"}}
    body.update(changes)
    return body


def _can_select(cluster, role: str, schema: str) -> bool:
    with admin_conn(cluster) as conn:
        return conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')",
                            (role, f'"{schema}".ledger')).fetchone()[0]


def test_break_glass_applies_at_once_expires_with_its_sessions_and_waits_for_post_hoc_review(
    payments_schema, people, api_for, web_for, managed_cluster, managed_instance, wait_for_status
):
    schema, role, password = payments_schema
    # when alice, a requester of the owning team, breaks the glass for an incident
    filed = api_for("alice").post("/api/v1/break-glass/", _body(schema, role), format="json")
    assert filed.status_code == 201, filed.json()
    assert filed.json()["break_glass"] is True and filed.json()["status"] == "queued"
    assert filed.json()["break_glass_review"]["incident_ref"] == "INC-4242"
    request = wait_for_status(filed.json()["id"], {"applied", "failed"})
    # then it applied with nobody's approval, through the engine, and the cluster shows the grant
    assert request.status == RequestStatus.APPLIED, request.status_detail
    assert not request.approvals.exists()
    assert _can_select(managed_cluster, role, schema)
    chain_pending(wait=True)  # every event chained: seq is then the order they were recorded in
    actions = list(AuditEvent.objects.filter(request_id=request.pk).order_by("seq").values_list("action", flat=True))
    assert actions[:4] == ["request.submitted", "request.break_glass", "policy.bypassed", "request.queued"]
    assert {"sql.executed", "request.applied"} <= set(actions)
    bypass = AuditEvent.objects.get(request_id=request.pk, action="policy.bypassed")
    assert bypass.details["incident_ref"] == "INC-4242" and bypass.outcome == "bypassed"
    assert bypass.details["would_require"]["approvals_required"] >= 1
    # and every reviewer and admin is told at once (the notification the worker sends)
    sent = notify_send(request.pk, "break_glass")
    assert {people["bob"].email, people["admin"].email} <= set(sent["email"])
    # and the grant carries its end: now + 30 minutes
    grant = Grant.objects.get(request=request)
    assert timedelta(minutes=29) < grant.expires_at - timezone.now() <= timedelta(minutes=30)
    # and the role connects and reads
    session = psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=role,
                              password=password, passfile="/dev/null", autocommit=True)
    session.execute(sql.SQL("SELECT count(*) FROM {}.ledger").format(sql.Identifier(schema)))
    # and the badge shows in the list, the detail and the review queue
    listed = {r["id"]: r for r in api_for("alice").get("/api/v1/requests/").json()["results"]}
    assert listed[request.pk]["break_glass"] is True
    detail_page = web_for("alice").get(f"/requests/{request.pk}/").content.decode()
    assert "break-glass" in detail_page and "INC-4242" in detail_page
    queue = web_for("bob").get("/reviews/").content.decode()
    assert "INC-4242" in queue and "Post-hoc review" in queue

    # when its time is up: the beat's expiry job, run as of one second past the end of the box
    # (the clock it is given, rather than waiting 30 minutes; the grant row is left as filed)
    assert expire_grants(now=grant.expires_at - timedelta(seconds=1)) == []  # not before its end
    revoke = wait_for_status(expire_grants(now=grant.expires_at + timedelta(seconds=1))[0], {"applied", "failed"})
    # then the grant is revoked, the session ended, and the revocation verified on the catalog
    assert revoke.status == RequestStatus.APPLIED, revoke.status_detail
    assert not _can_select(managed_cluster, role, schema)
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    assert AuditEvent.objects.filter(request_id=revoke.pk, action="session.terminated", outcome="terminated").exists()
    verified = verification_of(revoke.pk)
    assert verified.outcome == "verified" and verified.details["role"] == role

    # and the post-hoc review is still owed: the requester and an auditor may not close it
    pending = api_for("bob").get("/api/v1/break-glass/", {"pending": "true"}).json()["results"]
    assert [r["request"] for r in pending] == [request.pk]
    review = f"/api/v1/break-glass/{request.pk}/review/"
    assert api_for("alice").post(review, {"outcome": "acknowledged", "comment": "mine"}, format="json").status_code == 403
    assert api_for("carol").post(review, {"outcome": "acknowledged", "comment": "x"}, format="json").status_code == 403
    assert api_for("bob").post(review, {"outcome": "acknowledged"}, format="json").status_code == 400
    # when bob acknowledges it with a comment
    done = api_for("bob").post(review, {"outcome": "acknowledged", "comment": "matches INC-4242"}, format="json")
    assert done.status_code == 200, done.json()
    assert done.json()["review_outcome"] == "acknowledged" and done.json()["reviewed_by"] == "bob"
    # then it leaves the queue, once
    assert api_for("bob").post(review, {"outcome": "misuse", "comment": "again"}, format="json").status_code == 409
    assert api_for("bob").get("/api/v1/break-glass/", {"pending": "true"}).json()["results"] == []
    assert "INC-4242" not in web_for("bob").get("/reviews/").content.decode()
    event = AuditEvent.objects.get(request_id=request.pk, action="request.break_glass_reviewed")
    assert event.outcome == "acknowledged" and event.actor == "bob"


def test_break_glass_is_refused_without_incident_beyond_the_limit_for_ddl_and_where_switched_off(
    people, api_for, managed_instance
):
    body = _body("some_schema", "some_role")
    # (a 403 is itself recorded, as access.denied: not a change)
    changes = AuditEvent.objects.exclude(action="access.denied")
    before = (ChangeRequest.objects.count(), changes.count())

    def refused(username: str, data: dict, status: int, field: str) -> None:
        response = api_for(username).post("/api/v1/break-glass/", data, format="json")
        assert response.status_code == status, response.json()
        assert field in response.json()["errors"], response.json()

    refused("alice", _filed(body, incident_ref=""), 400, "incident_ref")
    refused("alice", _filed(body, incident_ref="see slack; DROP TABLE x"), 400, "incident_ref")
    refused("alice", _filed(body, duration_minutes=4 * 60 + 1), 400, "duration_minutes")
    refused("alice", _filed(body, duration_minutes=0), 400, "duration_minutes")
    with override_settings(BREAK_GLASS_MAX_HOURS=1):
        refused("alice", _filed(body, duration_minutes=61), 400, "duration_minutes")
    refused("alice", _filed(body, type="ddl", payload={"database": "app", "schema": "s", "sql": "DROP TABLE t"}),
            400, "type")
    refused("alice", _filed(body, type="role", payload=role_payload("bg_new_role")), 400, "type")
    refused("alice", _filed(body, payload={**body["payload"], "privileges": ["CREATE"]}), 400, "payload.privileges")
    refused("alice", _filed(body, payload={**body["payload"], "privileges": ["SELECT", "TRUNCATE"]}), 400,
            "payload.privileges")
    refused("alice", _filed(body, justification=""), 400, "justification")
    # a reviewer or an admin is no requester of the team: no break-glass for them
    refused("bob", body, 403, "team")
    refused("admin", body, 403, "team")
    # switched off: prod by default
    managed_instance.environment = Environment.PROD
    managed_instance.save(update_fields=["environment"])
    refused("alice", body, 403, "instance")
    # nothing was written by any of these
    assert (ChangeRequest.objects.count(), changes.count()) == before
    # only an admin switches it, and that is audited
    assert api_for("alice").post("/api/v1/break-glass/settings/", {"environment": "prod", "enabled": True},
                                 format="json").status_code == 403
    switched = api_for("admin").post("/api/v1/break-glass/settings/", {"environment": "prod", "enabled": True},
                                     format="json")
    assert switched.status_code == 200
    assert {s["environment"]: s["enabled"] for s in switched.json()}["prod"] is True
    changed = AuditEvent.objects.get(action="policy.changed", object_type="break_glass_setting")
    assert changed.details["before"] is False and changed.details["after"] is True
    # and off again for dev refuses there too
    api_for("admin").post("/api/v1/break-glass/settings/", {"environment": "prod", "enabled": False}, format="json")
    refused("alice", body, 403, "instance")


def test_break_glass_reaches_only_the_requesting_teams_schemas(payments_schema, people, api_for):
    schema, role, _ = payments_schema
    # dave leads analytics: a payments schema is not his to break into
    response = api_for("dave").post("/api/v1/break-glass/", _body(schema, role, team="analytics"), format="json")
    assert response.status_code in (400, 403), response.json()
    assert not ChangeRequest.objects.filter(break_glass=True).exists()
    assert not BreakGlass.objects.exists()


def test_an_overdue_post_hoc_review_is_notified_once_and_flagged(payments_schema, people, api_for, web_for,
                                                                  wait_for_status):
    from portal.services.breakglass import break_glass_overdue

    schema, role, _ = payments_schema
    filed = api_for("alice").post("/api/v1/break-glass/", _body(schema, role, incident_ref="OPS-7"), format="json")
    assert filed.status_code == 201, filed.json()
    BreakGlass.objects.filter(request_id=filed.json()["id"]).update(review_due_at=timezone.now() - timedelta(hours=1))
    assert break_glass_overdue() == [filed.json()["id"]]
    assert break_glass_overdue() == []
    assert AuditEvent.objects.filter(action="request.break_glass_overdue", request_id=filed.json()["id"]).count() == 1
    detail = api_for("bob").get(f"/api/v1/requests/{filed.json()['id']}/").json()
    assert detail["break_glass_review"]["overdue"] is True
    # and the review queue highlights it
    queue = web_for("bob").get("/reviews/").content.decode()
    row = queue[queue.index(f'id="post-hoc-{filed.json()["id"]}"') - 200:queue.index(f'id="acknowledge-{filed.json()["id"]}"')]
    assert "table-danger" in row and "overdue" in row
    # misuse: the grant still active is revoked at once through the expiry path
    wait_for_status(filed.json()["id"], {"applied", "failed"})
    flagged = api_for("bob").post(f"/api/v1/break-glass/{filed.json()['id']}/review/",
                                  {"outcome": "misuse", "comment": "no incident OPS-7 exists"}, format="json")
    assert flagged.status_code == 200, flagged.json()
    revoke = ChangeRequest.objects.filter(type="revoke", requester__isnull=True, payload__role=role).first()
    assert revoke is not None
    assert wait_for_status(revoke.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
