"""Drift: a GRANT made by hand shows within one scan; findings are acknowledged or revoked."""

from __future__ import annotations

import pytest
from django.urls import URLPattern
from psycopg import sql

from portal.api.urls import router
from portal.choices import DriftKind, DriftStatus, RequestStatus
from portal.models import ChangeRequest
from provisioning.drift import drift_scan
from provisioning.models import DriftFinding
from tests.provisioning.helpers import admin_conn, approved_request, grant_payload, role_payload, schema_payload, unique

pytestmark = pytest.mark.slow



def _open(role: str) -> dict[tuple[str, str, str], DriftFinding]:
    return {(f.kind, f.object_name, f.privilege): f
            for f in DriftFinding.objects.filter(role=role, status__in=[DriftStatus.OPEN, DriftStatus.ACKNOWLEDGED])}


@pytest.fixture
def granted(transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    """A portal schema with a table, a portal role, and SELECT on the schema's tables for it."""
    schema, reader = unique("drift"), unique("reader")
    for request in (approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
                    approved_request(managed_instance, "role", role_payload(reader), requester=people["alice"])):
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
    request = approved_request(managed_instance, "grant", grant_payload(reader, schema, ["SELECT"]),
                               requester=people["alice"])
    assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    return schema, reader


def test_what_the_portal_granted_is_not_drift_and_a_hand_grant_shows_within_one_scan(
    granted, managed_cluster, managed_instance
):
    schema, reader = granted
    # given a scan of the cluster as the portal left it: nothing about this role
    drift_scan(managed_instance)
    assert _open(reader) == {}
    # when an operator grants by hand in psql, and gives the role a dangerous attribute
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("GRANT INSERT ON {}.t TO {}").format(sql.Identifier(schema), sql.Identifier(reader)))
        conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), sql.Identifier(reader)))
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(reader)))
    result = drift_scan(managed_instance)
    # then one scan shows all three
    found = _open(reader)
    assert set(found) == {
        (DriftKind.UNEXPECTED, f"{schema}.t", "INSERT"),
        (DriftKind.MISSING, schema, "USAGE"),
        (DriftKind.DANGEROUS, reader, "CREATEDB"),
    }
    assert result["new"] >= 3
    # and when the cluster is put back, the next scan resolves them
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON {}.t FROM {}").format(sql.Identifier(schema), sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(reader)))
    with admin_conn(managed_cluster, "postgres") as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOCREATEDB").format(sql.Identifier(reader)))
    drift_scan(managed_instance)
    assert _open(reader) == {}
    assert {f.status for f in DriftFinding.objects.filter(role=reader)} == {DriftStatus.RESOLVED}


def test_the_drift_api_acknowledges_and_revokes_through_an_approved_request(
    granted, people, api_for, managed_cluster, managed_instance, wait_for_status
):
    schema, reader = granted
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("GRANT DELETE, TRUNCATE ON {}.t TO {}").format(sql.Identifier(schema), sql.Identifier(reader)))
    # when a reviewer scans now
    scanned = api_for("bob").post("/api/v1/drift/scan/", {"instance": "demo"}, format="json")
    assert scanned.status_code == 200 and scanned.json()["results"]["demo"]["findings"] >= 2
    # then the findings are listed for reviewers and auditors, not for requesters
    listed = api_for("carol").get("/api/v1/drift/", {"role": reader})
    assert listed.status_code == 200
    by_privilege = {f["privilege"]: f for f in listed.json()["results"]}
    assert set(by_privilege) == {"DELETE", "TRUNCATE"}
    assert api_for("alice").get("/api/v1/drift/").status_code == 403
    delete_id, truncate_id = by_privilege["DELETE"]["id"], by_privilege["TRUNCATE"]["id"]
    # and an auditor may not act on them; a reviewer acknowledges one
    assert api_for("carol").post(f"/api/v1/drift/{delete_id}/acknowledge/", {}, format="json").status_code == 403
    ack = api_for("bob").post(f"/api/v1/drift/{delete_id}/acknowledge/", {"comment": "known"}, format="json")
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    assert api_for("bob").post(f"/api/v1/drift/{delete_id}/acknowledge/", {}, format="json").status_code == 409
    # and files a revoke of the other, which is approved and applied like any request
    filed = api_for("bob").post(f"/api/v1/drift/{truncate_id}/revoke/", {}, format="json")
    assert filed.status_code == 201, filed.json()
    revoke = ChangeRequest.objects.get(pk=filed.json()["request"])
    assert revoke.type == "revoke" and revoke.status == RequestStatus.SUBMITTED and revoke.requester_id is None
    assert revoke.filed_by == people["bob"]  # a system request, filed by bob
    assert revoke.plan == [f'REVOKE TRUNCATE ON TABLE "{schema}"."t" FROM "{reader}"']
    # and bob, who filed it, may not approve it himself
    refused = api_for("bob").post(f"/api/v1/requests/{revoke.pk}/approve/", {"comment": "mine"}, format="json")
    assert refused.status_code == 403, refused.json()
    assert "you filed this request" in refused.json()["detail"]
    assert ChangeRequest.objects.get(pk=revoke.pk).status == RequestStatus.SUBMITTED
    assert not revoke.approvals.exists()
    # nor is it in his review queue, while it is in the other reviewer's
    from portal.selectors.requests import pending_reviews

    assert revoke.pk not in {r.pk for r in pending_reviews(people["bob"])}
    assert revoke.pk in {r.pk for r in pending_reviews(people["admin"])}
    # while another reviewer's approval applies it
    approved = api_for("admin").post(f"/api/v1/requests/{revoke.pk}/approve/", {"comment": "remove the hand grant"},
                                     format="json")
    assert approved.status_code == 200, approved.json()
    revoke = ChangeRequest.objects.get(pk=revoke.pk)
    if revoke.status != RequestStatus.APPLIED:
        revoke = wait_for_status(revoke.pk, {"applied", "failed"})
    assert revoke.status == RequestStatus.APPLIED, revoke.status_detail
    drift_scan(managed_instance)
    assert DriftFinding.objects.get(pk=truncate_id).status == DriftStatus.RESOLVED
    assert DriftFinding.objects.get(pk=delete_id).status == DriftStatus.ACKNOWLEDGED


DRIFT_MATRIX = {
    ("drift-list", "get"): {"alice": 403, "dave": 403, "bob": 200, "carol": 200, "admin": 200, None: 401},
    ("drift-detail", "get"): {"alice": 403, "dave": 403, "bob": 200, "carol": 200, "admin": 200, None: 401},
    ("drift-acknowledge", "post"): {"alice": 403, "dave": 403, "bob": 200, "carol": 403, "admin": 200, None: 401},
    ("drift-revoke", "post"): {"alice": 403, "dave": 403, "bob": 409, "carol": 403, "admin": 409, None: 401},
    ("drift-scan", "post"): {"alice": 403, "dave": 403, "bob": 200, "carol": 403, "admin": 200, None: 401},
}


def test_every_drift_endpoint_has_a_row_in_the_matrix():
    names = {p.name for p in router.urls if isinstance(p, URLPattern) and p.name.startswith("drift-")}
    methods = {(p.name, m) for p in router.urls if p.name in names for m in p.callback.actions if m != "head"}
    assert methods == set(DRIFT_MATRIX)


@pytest.mark.parametrize("persona", ["alice", "dave", "bob", "carol", "admin", None], ids=lambda p: p or "anonymous")
@pytest.mark.parametrize(("endpoint", "method"), list(DRIFT_MATRIX), ids=lambda x: x if isinstance(x, str) else "")
def test_drift_persona_endpoint_matrix(people, api_for, managed_instance, persona, endpoint, method):
    # a dangerous-attribute finding: acknowledgeable, but not revocable here (409)
    finding = DriftFinding.objects.create(instance=managed_instance, kind=DriftKind.DANGEROUS, role="r",
                                          object_type="role", object_name="r", privilege="SUPERUSER", detail="x")
    path = {"drift-list": "/api/v1/drift/", "drift-scan": "/api/v1/drift/scan/"}.get(endpoint) or (
        f"/api/v1/drift/{finding.pk}/" + {"drift-detail": "", "drift-acknowledge": "acknowledge/",
                                          "drift-revoke": "revoke/"}[endpoint])
    client = api_for(persona)
    body = {"instance": "demo"} if endpoint == "drift-scan" else {}
    response = client.post(path, body, format="json") if method == "post" else client.get(path)
    assert response.status_code == DRIFT_MATRIX[(endpoint, method)][persona], response.json()
