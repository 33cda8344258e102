"""Revocation that proves itself: after a revoke applies, the worker reads the catalog again and
records the privilege gone, or opens a drift finding when it is not; a role left with nothing is
proposed for removal as a reviewed request."""

from __future__ import annotations

import pytest
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import DriftKind, DriftStatus, RequestStatus
from portal.models import ChangeRequest, ManagedRole
from provisioning.models import DriftFinding
from tests.fixtures.celery import wait_until
from tests.provisioning.helpers import admin_conn, approved_request, grant_payload, role_payload, schema_payload, unique

pytestmark = pytest.mark.slow


def verification_of(request_id: int) -> AuditEvent:
    """The worker records the verification right after it records the apply: wait for it."""
    return wait_until(lambda: AuditEvent.objects.filter(request_id=request_id,
                                                        action="grant.revocation_verified").first(),
                      timeout=30, message=f"the revocation of request {request_id} to be verified")


@pytest.fixture
def granted(transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    """A payments schema with a table; a portal role holding USAGE and SELECT on it (a portal grant)."""
    schema, reader = unique("rv"), unique("rvreader")
    for request in (approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
                    approved_request(managed_instance, "role", role_payload(reader), requester=people["alice"])):
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
    grant = approved_request(managed_instance, "grant", grant_payload(reader, schema, ["USAGE", "SELECT"]),
                             requester=people["alice"])
    assert wait_for_status(grant.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    return schema, reader


def _revoke(instance, schema, role, people, wait_for_status):
    request = approved_request(instance, "revoke", grant_payload(role, schema, ["USAGE", "SELECT"]),
                               requester=people["alice"])
    request = wait_for_status(request.pk, {"applied", "failed"})
    assert request.status == RequestStatus.APPLIED, request.status_detail
    return request


def _has_select(cluster, role, schema) -> bool:
    with admin_conn(cluster) as conn:
        return conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (role, f'"{schema}".t')).fetchone()[0]


def test_a_revoke_is_verified_on_the_catalog_and_the_emptied_role_is_proposed_for_removal(
    granted, people, api_for, web_for, managed_cluster, managed_instance, wait_for_status
):
    schema, reader = granted
    # when the portal revokes everything the role had
    revoke = _revoke(managed_instance, schema, reader, people, wait_for_status)
    # then the worker recorded, after the apply, that the privileges are gone from the catalog
    assert not _has_select(managed_cluster, reader, schema)
    verified = verification_of(revoke.pk)
    assert verified.outcome == "verified"
    applied = AuditEvent.objects.get(request_id=revoke.pk, action="request.applied")
    assert verified.ts >= applied.ts  # recorded after the apply (seq may still be pending: audit/chainer.py)
    assert not DriftFinding.objects.filter(role=reader).exists()
    # and the request says so, in the API and on its page
    detail = api_for("alice").get(f"/api/v1/requests/{revoke.pk}/").json()
    assert detail["revocation_verified"]["outcome"] == "verified"
    assert "Verified:" in web_for("alice").get(f"/requests/{revoke.pk}/").content.decode()
    # and the role, which now holds nothing, is proposed for removal: a request waiting for review
    proposal = wait_until(lambda: ChangeRequest.objects.filter(type="drop_role", payload__name=reader).first(),
                          timeout=30, message="the removal proposal")
    assert proposal.status == RequestStatus.SUBMITTED and proposal.requester_id is None
    assert proposal.plan[1:] == [f'GRANT "{reader}" TO CURRENT_USER', f'REASSIGN OWNED BY "{reader}" TO CURRENT_USER',
                                 f'DROP OWNED BY "{reader}"', f'DROP ROLE "{reader}"']
    assert proposal.plan[0].startswith("SELECT EXISTS (SELECT FROM pg_catalog.pg_roles")
    assert AuditEvent.objects.filter(action="role.removal_proposed", object_id=reader, outcome="proposed").exists()
    # and it is not applied until a reviewer approves it
    assert api_for("alice").post(f"/api/v1/requests/{proposal.pk}/approve/", {"comment": "x"},
                                 format="json").status_code == 403
    approved = api_for("bob").post(f"/api/v1/requests/{proposal.pk}/approve/", {"comment": "unused"}, format="json")
    assert approved.status_code == 200, approved.json()
    done = wait_for_status(proposal.pk, {"applied", "failed"})
    assert done.status == RequestStatus.APPLIED, done.status_detail
    with admin_conn(managed_cluster, "postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (reader,)).fetchone()[0] == 0
    assert ManagedRole.objects.get(instance=managed_instance, name=reader).dropped_at is not None


def test_a_revoke_that_did_not_take_opens_a_drift_finding(
    granted, people, api_for, managed_cluster, managed_instance, wait_for_status
):
    schema, reader = granted
    # given a second grantor: a role holding SELECT WITH GRANT OPTION that grants it to the reader
    # too (the admin's REVOKE, run as the table's owner, cannot take back someone else's grant)
    delegate = unique("rvdelegate")
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(delegate)))
    with admin_conn(managed_cluster) as conn:
        table = sql.SQL("{}.t").format(sql.Identifier(schema))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(delegate)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {} WITH GRANT OPTION").format(table, sql.Identifier(delegate)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(delegate)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(table, sql.Identifier(reader)))
        conn.execute("RESET ROLE")
    # when the portal revokes the reader's SELECT
    revoke = _revoke(managed_instance, schema, reader, people, wait_for_status)
    # then the reader still can read, and the worker says so: not verified, and a drift finding
    assert _has_select(managed_cluster, reader, schema)
    event = verification_of(revoke.pk)
    assert event.outcome == "failed"
    assert event.details["reason"] == "privileges still held after the revoke"
    assert event.details["remaining"] == [f"SELECT on table {schema}.t"]
    finding = DriftFinding.objects.get(role=reader)
    assert (finding.kind, finding.object_type, finding.object_name, finding.privilege, finding.status) == (
        DriftKind.UNEXPECTED, "table", f"{schema}.t", "SELECT", DriftStatus.OPEN)
    assert finding.pk in event.details["drift_findings"]
    shown = api_for("bob").get(f"/api/v1/requests/{revoke.pk}/").json()["revocation_verified"]
    assert shown["outcome"] == "failed" and shown["drift_findings"] == [finding.pk]
    assert AuditEvent.objects.filter(action="drift.detected", object_id=str(finding.pk)).exists()
    # and a role that still holds something is not proposed for removal
    assert not ChangeRequest.objects.filter(type="drop_role", payload__name=reader).exists()
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("REVOKE ALL ON {}.t FROM {} CASCADE").format(sql.Identifier(schema),
                                                                          sql.Identifier(delegate)))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(schema), sql.Identifier(delegate)))


def test_an_offboarding_is_verified_on_the_catalog(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    from portal.services.offboarding import offboard

    # given alice's login role with SELECT on a payments table
    schema, login = unique("rvoff"), unique("rvofflogin")
    for request in (approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
                    approved_request(managed_instance, "role", role_payload(login, login=True),
                                     requester=people["alice"])):
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
    grant = approved_request(managed_instance, "grant", grant_payload(login, schema, ["SELECT"]),
                             requester=people["alice"])
    assert wait_for_status(grant.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    # when an admin offboards alice
    result = offboard(people["alice"], actor=people["admin"], reason="left the company")
    filed = result.disable_requests + result.revoke_requests
    assert result.disable_requests and result.revoke_requests
    for request_id in filed:
        assert wait_for_status(request_id, {"applied", "failed"}).status == RequestStatus.APPLIED
    # then each removal was checked on the catalog after it applied, and held
    for request_id in filed:
        event = verification_of(request_id)
        assert event.outcome == "verified", event.details
    disabled = verification_of(result.disable_requests[0])
    assert disabled.details["what"] == "login" and disabled.details["role"] == login
    with admin_conn(managed_cluster, "postgres") as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (login,)).fetchone()[0] is False
