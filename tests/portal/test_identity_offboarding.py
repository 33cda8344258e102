"""Offboarding (#17): a deactivated user's login roles and grants are taken back on the cluster
through the engine, their sessions end, their open requests are cancelled, their tokens and web
sessions stop at once; the preview lists exactly what will be revoked. Real cluster, real worker."""

from __future__ import annotations

import psycopg
import pytest
from django.test import Client
from psycopg import sql
from rest_framework.test import APIClient

from audit.models import AuditEvent
from portal.choices import RequestStatus, RequestType
from portal.errors import PolicyViolation
from portal.models import ApiToken, ChangeRequest, Grant, ManagedRole
from portal.services.offboarding import offboard, offboard_sweep, preview
from provisioning.plans import module_for, plan_hash, plan_text
from provisioning.secrets import secret_reveal
from tests.fixtures.people import token_for
from tests.provisioning.helpers import admin_conn, approved_request, grant_payload, role_payload, schema_payload, unique

pytestmark = pytest.mark.slow


def _login_role_with_a_grant(instance, cluster, requester, wait_for_status):
    schema, name = unique("off"), unique("svc")
    for request in (approved_request(instance, "schema", schema_payload(schema), requester=requester),
                    approved_request(instance, "role", role_payload(name, login=True), requester=requester)):
        done = wait_for_status(request.pk, {"applied", "failed"})
        assert done.status == RequestStatus.APPLIED, done.status_detail
    with admin_conn(cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
    grant_request = approved_request(instance, "grant", grant_payload(name, schema, ["SELECT"]), requester=requester)
    assert wait_for_status(grant_request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    role_request = ChangeRequest.objects.get(type="role", payload__name=name)
    return schema, name, role_request, Grant.objects.get(request=grant_request)


def _submitted_request(instance, requester) -> ChangeRequest:
    payload = schema_payload(unique("pending"))
    plan = plan_text(module_for("schema").render(payload, secrets=None))
    return ChangeRequest.objects.create(type="schema", instance=instance, team_id=ChangeRequest.objects.filter(
        requester=requester).values_list("team_id", flat=True).first(), requester=requester, justification="open",
        payload=payload, plan=plan, plan_hash=plan_hash(plan), status=RequestStatus.SUBMITTED)


def test_offboarding_revokes_the_login_role_and_the_grant_on_the_cluster_and_ends_everything(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    alice, admin = people["alice"], people["admin"]
    # given alice asked for a login role and a grant to it, both live, with a session open
    schema, name, role_request, grant = _login_role_with_a_grant(managed_instance, managed_cluster, alice,
                                                                 wait_for_status)
    password = secret_reveal(request=role_request, user=alice)
    session = psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name,
                              password=password, passfile="/dev/null", autocommit=True)
    assert session.execute(sql.SQL("SELECT count(*) FROM {}.t").format(sql.Identifier(schema))).fetchone()[0] == 0
    # and an open request, an API token and a web session
    pending = _submitted_request(managed_instance, alice)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(alice)}")
    assert api.get("/api/v1/teams/").status_code == 200
    web = Client()
    web.force_login(alice)
    assert web.get("/").status_code == 200

    # when an admin previews the offboarding
    found = preview(alice)
    # then it lists exactly the live login role, the grant, the open request and the token
    assert [r.name for r in found.login_roles] == [name]
    assert [g.pk for g in found.grants] == [grant.pk]
    assert [r.pk for r in found.open_requests] == [pending.pk]
    assert len(found.tokens) == 1 and found.in_flight == []

    # when the admin offboards alice
    result = offboard(alice, actor=admin, reason="left the company", actor_ip="10.0.0.9")
    assert result.deactivated and len(result.disable_requests) == 1 and len(result.revoke_requests) == 1
    assert result.cancelled_requests == [pending.pk] and result.tokens_revoked == 1

    # then her token and her web session stop at once
    refused = api.get("/api/v1/teams/")
    assert refused.status_code == 401 and refused.json()["detail"] in ("User inactive or deleted.", "Token revoked.")
    assert web.get("/").status_code == 302
    # and her open request is cancelled
    pending.refresh_from_db()
    assert pending.status == RequestStatus.CANCELLED
    # and both system requests apply through the engine
    for request_id in result.disable_requests + result.revoke_requests:
        applied = wait_for_status(request_id, {"applied", "failed"})
        assert applied.status == RequestStatus.APPLIED, applied.status_detail
        assert applied.requester_id is None and applied.filed_by_id == admin.pk
    disable = ChangeRequest.objects.get(pk=result.disable_requests[0])
    assert disable.type == RequestType.DISABLE and disable.plan[-1] == f'ALTER ROLE "{name}" NOLOGIN'
    # and on the cluster: the role cannot log in, and holds no privilege on the schema or table
    with admin_conn(managed_cluster) as conn:
        can_login = conn.execute("SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = %s", (name,)).fetchone()
        usage = conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (name, schema)).fetchone()[0]
        select = conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')",
                              (name, f"{schema}.t")).fetchone()[0]
        sessions = conn.execute("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = %s",
                                (name,)).fetchone()[0]
    assert can_login == (False,) and usage is False and select is False and sessions == 0
    # and her open session was ended
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                        passfile="/dev/null").close()
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    # and it is all in the audit log
    events = AuditEvent.objects.filter(object_type="user", object_id=str(alice.pk))
    assert list(events.values_list("action", "actor", "outcome")) == [
        ("user.deactivated", "admin", "deactivated"), ("user.offboarded", "admin", "offboarded")]
    offboarded = events.get(action="user.offboarded")
    assert offboarded.details["login_roles_disabled"] == 1 and offboarded.details["grants_revoked"] == 1
    assert offboarded.details["requests_cancelled"] == 1 and offboarded.details["tokens_revoked"] == 1
    assert AuditEvent.objects.filter(action="session.terminated", request_id__in=result.disable_requests).exists()
    assert AuditEvent.objects.filter(action="request.cancelled", request_id=pending.pk, actor="admin").exists()
    assert AuditEvent.objects.filter(action="token.revoked", details__reason="offboarding").count() == 1
    # and nothing is left: a second preview is empty, a second offboarding and the sweep file nothing
    again = preview(alice)
    assert again.login_roles == [] and again.grants == [] and again.open_requests == [] and again.tokens == []
    second = offboard(alice, actor=admin, reason="again")
    assert not second.deactivated and second.disable_requests == [] and second.revoke_requests == []
    assert offboard_sweep() == []
    assert ManagedRole.objects.get(name=name).login is True  # the record keeps what the role was made as
    assert ApiToken.objects.filter(user=alice, revoked_at__isnull=True).count() == 0


def test_only_platform_admins_offboard_and_never_themselves(db, people):
    for username in ("alice", "dave", "bob", "carol"):
        with pytest.raises(PolicyViolation):
            offboard(people["dave"] if username != "dave" else people["alice"], actor=people[username],
                     reason="not allowed")
    with pytest.raises(PolicyViolation):
        offboard(people["admin"], actor=people["admin"], reason="myself")
    assert all(people[name].__class__.objects.get(pk=people[name].pk).is_active for name in people)
    assert not AuditEvent.objects.filter(action__in=["user.deactivated", "user.offboarded"]).exists()


def test_the_sweep_offboards_an_inactive_user_whose_in_flight_grant_applied_later(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    alice, admin = people["alice"], people["admin"]
    # given alice was offboarded while nothing of hers was live yet
    offboard(alice, actor=admin, reason="left")
    # when a grant she asked for applies afterwards (it was queued: the engine cannot stop it halfway)
    schema, name, _role_request, grant = _login_role_with_a_grant(managed_instance, managed_cluster, alice,
                                                                  wait_for_status)
    # then the periodic check finds it and takes it back as the portal
    assert offboard_sweep() == [alice.pk]
    filed = ChangeRequest.objects.filter(requester__isnull=True, justification__startswith="offboarding of user alice")
    assert filed.count() == 2 and not filed.filter(filed_by__isnull=False).exists()
    for request in filed:
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = %s",
                            (name,)).fetchone() == (False,)
    assert AuditEvent.objects.filter(action="user.offboarded", actor="system").exists()


def _recorded_access(instance, user):
    """A login role and a grant the portal records as made by requests of `user` (no cluster needed
    to preview them), plus a submitted request of theirs."""
    role_request = ChangeRequest.objects.create(
        type="role", instance=instance, team_id=_team("payments").pk, requester=user,
        justification="t", payload=role_payload("svc_preview", login=True), plan=[], plan_hash="x",
        status=RequestStatus.APPLIED)
    ManagedRole.objects.create(instance=instance, name="svc_preview", login=True, team=role_request.team,
                               request=role_request)
    grant_request = ChangeRequest.objects.create(
        type="grant", instance=instance, team=role_request.team, requester=user, justification="t",
        payload=grant_payload("svc_preview", "pay", ["SELECT"]), plan=[], plan_hash="x",
        status=RequestStatus.APPLIED)
    grant = Grant.objects.create(instance=instance, database="app", schema="pay", role="svc_preview",
                                 privileges=["SELECT"], tables="all", team=role_request.team, request=grant_request)
    return grant, _submitted_request(instance, user)


def _team(name):
    from portal.models import Team

    return Team.objects.get(name=name)


def test_the_preview_page_and_api_list_exactly_what_would_be_revoked_for_admins_only(
    people, managed_instance, web_for, api_for
):
    grant, pending = _recorded_access(managed_instance, people["alice"])
    token_for(people["alice"])
    alice_id = people["alice"].pk
    # then the API preview names the role, the grant, the open request and the token
    preview_api = api_for("admin").get(f"/api/v1/users/{alice_id}/offboarding/").json()
    assert [r["name"] for r in preview_api["login_roles"]] == ["svc_preview"]
    assert [g["id"] for g in preview_api["grants"]] == [grant.pk]
    assert [r["id"] for r in preview_api["open_requests"]] == [pending.pk]
    assert preview_api["counts"] == {"login_roles": 1, "grants": 1, "open_requests": 1, "in_flight": 0, "tokens": 1}
    # and the page shows the same, with the confirmation form
    page = web_for("admin").get(f"/users/{alice_id}/").content.decode()
    assert "svc_preview" in page and f"#{pending.pk}" in page and 'id="offboard-form"' in page
    # and nobody else may see or do it
    for username in ("alice", "dave", "bob", "carol"):
        api = api_for(username)
        assert api.get(f"/api/v1/users/{alice_id}/offboarding/").status_code == 403
        assert api.post(f"/api/v1/users/{alice_id}/offboard/", {"reason": "x"}, format="json").status_code == 403
    for username in ("dave", "bob", "carol"):
        client = Client()
        client.force_login(people[username])
        assert client.post(f"/users/{alice_id}/", {"reason": "x", "confirm": "on"}).status_code == 403
    people["alice"].refresh_from_db()
    assert people["alice"].is_active and not AuditEvent.objects.filter(action="user.offboarded").exists()
    # and the admin cannot offboard themselves, nor without a reason
    admin_api = api_for("admin")
    assert admin_api.post(f"/api/v1/users/{people['admin'].pk}/offboard/", {"reason": "me"},
                          format="json").status_code == 403
    answer = admin_api.post(f"/api/v1/users/{alice_id}/offboard/", {"reason": ""}, format="json")
    assert answer.status_code == 400 and "reason" in answer.json()["errors"]
    # when the admin confirms on the page (alice's tokens: hers and the one api_for made above)
    tokens = ApiToken.objects.filter(user=people["alice"], revoked_at__isnull=True).count()
    assert tokens == 2
    done = web_for("admin").post(f"/users/{alice_id}/", {"reason": "left", "confirm": "on"})
    assert done.status_code == 302
    # then the user is offboarded with the counts the preview showed
    event = AuditEvent.objects.get(action="user.offboarded")
    assert (event.details["login_roles_disabled"], event.details["grants_revoked"],
            event.details["requests_cancelled"], event.details["tokens_revoked"]) == (1, 1, 1, tokens)
    assert ChangeRequest.objects.filter(type="disable", payload__role="svc_preview", status="queued").exists()
    # and the system requests read like any other, on the pages and the API
    disable = ChangeRequest.objects.get(type="disable", payload__role="svc_preview")
    admin_web = web_for("admin")
    assert admin_web.get(f"/requests/{disable.pk}/").status_code == 200
    assert admin_web.get("/requests/").status_code == 200
    assert api_for("bob").get(f"/api/v1/requests/{disable.pk}/").json()["type"] == "disable"


def test_nobody_submits_a_disable_request_it_is_the_portals_own(people, managed_instance, api_for):
    answer = api_for("alice").post("/api/v1/requests/", {
        "type": "disable", "instance": "demo", "team": "payments", "justification": "try",
        "payload": {"role": "anything"}}, format="json")
    assert answer.status_code == 400 and "payload.role" in answer.json()["errors"]
    assert not ChangeRequest.objects.filter(type="disable").exists()
