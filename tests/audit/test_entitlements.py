"""Entitlements: live from a real cluster joined with the portal's records, and as of a past date."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from portal.models import Grant, ManagedRole
from provisioning.catalog import read_privileges, read_roles
from tests.audit.world import build_world

SCHEMA = "audit_ent"
ROLE = "audit_ent_svc"
ROGUE = "audit_ent_rogue"


@pytest.fixture
def cluster_world(managed_cluster):
    """On the real cluster: alice's role with USAGE + SELECT on every table of a schema (as the
    portal granted), and a role someone granted SELECT on one table by hand."""
    with psycopg.connect(managed_cluster.socket_conninfo(dbname="app"), autocommit=True) as conn:
        for statement in (
            f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"DROP ROLE IF EXISTS {ROLE}", f"DROP ROLE IF EXISTS {ROGUE}",
            f"CREATE ROLE {ROLE} LOGIN", f"CREATE ROLE {ROGUE}", f"CREATE SCHEMA {SCHEMA}",
            f"CREATE TABLE {SCHEMA}.payments (id int)", f"CREATE TABLE {SCHEMA}.refunds (id int)",
            f"GRANT USAGE ON SCHEMA {SCHEMA} TO {ROLE}", f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {ROLE}",
            f"GRANT USAGE ON SCHEMA {SCHEMA} TO {ROGUE}", f"GRANT SELECT, UPDATE ON {SCHEMA}.refunds TO {ROGUE}",
        ):
            conn.execute(statement)
    yield managed_cluster
    with psycopg.connect(managed_cluster.socket_conninfo(dbname="app"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(ROGUE)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROGUE)))


def test_catalog_reads_privileges_and_roles_in_one_query_each(cluster_world):
    with psycopg.connect(cluster_world.socket_conninfo(dbname="app"), autocommit=True) as conn:
        privileges = [p for p in read_privileges(conn, "app") if p.schema == SCHEMA]
        roles = read_roles(conn)
    mine = {(p.object_type, p.object, p.privilege) for p in privileges if p.grantee == ROLE}
    assert mine == {("schema", None, "USAGE"), ("table", "payments", "SELECT"), ("table", "refunds", "SELECT")}
    rogue = {(p.object, p.privilege) for p in privileges if p.grantee == ROGUE and p.object_type == "table"}
    assert rogue == {("refunds", "SELECT"), ("refunds", "UPDATE")}
    assert roles[ROLE].login and not roles[ROGUE].login


def _rows(api, **params):
    response = api.get("/api/v1/entitlements/", {"instance": "demo", "schema": SCHEMA, **params})
    assert response.status_code == 200, response.json()
    return response.json()


def test_live_entitlements_explain_alices_role_with_bob_as_approver(people, api_for, managed_instance, cluster_world):
    # given the portal's records of alice's role and grant on that schema, approved by bob
    world = build_world(people, managed_instance, role=ROLE, schema=SCHEMA)
    # when carol asks who can access the schema
    body = _rows(api_for("carol"))
    assert body["mode"] == "live" and body["unreachable"] == {}
    rows = {(r["role"], r["kind"]): r for r in body["results"]}
    # then alice's role is there, explained by the grant request, approved by bob
    usage = rows[(ROLE, "schema")]
    assert usage["privileges"] == ["USAGE"] and not usage["unexplained"]
    assert usage["request_id"] == world.grant_request.pk and usage["approvers"] == ["bob"]
    assert usage["requester"] == "alice"
    select = rows[(ROLE, "tables")]
    assert select["privileges"] == ["SELECT"] and select["tables"] == "all" and not select["unexplained"]
    # and the hand-made grant is flagged
    rogue = rows[(ROGUE, "tables")]
    assert rogue["unexplained"] and rogue["privileges"] == ["SELECT", "UPDATE"] and rogue["tables"] == ["refunds"]
    assert rows[(ROGUE, "schema")]["unexplained"]
    # a reviewer sees the same; the CSV has every row
    assert _rows(api_for("bob"))["count"] == body["count"]
    download = api_for("carol").get("/api/v1/entitlements/", {"instance": "demo", "schema": SCHEMA, "format": "csv"})
    lines = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert {(r["role"], r["unexplained"]) for r in lines} >= {(ROLE, "no"), (ROGUE, "yes")}
    assert any(r["approvers"] == "bob" and r["role"] == ROLE for r in lines)


def test_history_survives_expiry_and_a_dropped_role(people, api_for, managed_instance):
    world = build_world(people, managed_instance, role="audit_hist_svc", schema="hist")
    grant = world.grant
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(granted_at=now - timedelta(days=10), expires_at=now - timedelta(days=3),
                                             revoked_at=now - timedelta(days=3))
    ManagedRole.objects.filter(name="audit_hist_svc").update(dropped_at=now - timedelta(days=1))
    api = api_for("carol")

    def roles_at(day):
        body = api.get("/api/v1/entitlements/", {"instance": "demo", "schema": "hist", "at": day.date().isoformat()})
        assert body.status_code == 200 and body.json()["mode"] == "at"
        return {(r["role"], r["kind"], r["request_id"], tuple(r["approvers"])) for r in body.json()["results"]}

    during = roles_at(now - timedelta(days=5))
    assert ("audit_hist_svc", "tables", world.grant_request.pk, ("bob",)) in during
    assert not roles_at(now - timedelta(days=12))  # before the grant
    assert not roles_at(now - timedelta(days=2))  # after it expired


def test_unknown_instance_and_bad_date_are_400(people, api_for):
    assert "instance" in api_for("carol").get("/api/v1/entitlements/", {"instance": "nope"}).json()["errors"]
    assert "at" in api_for("carol").get("/api/v1/entitlements/", {"at": "soon"}).json()["errors"]


def test_the_instance_filter_takes_an_id_or_a_name_like_every_other_filter(people, api_for, managed_instance):
    # given the records of a grant on the demo instance
    build_world(people, managed_instance, role="audit_byid_svc", schema="byid")
    api = api_for("carol")

    def rows(instance):
        response = api.get("/api/v1/entitlements/", {"instance": instance, "schema": "byid", "at": "2999-01-01"})
        assert response.status_code == 200, response.json()
        return response.json()["results"]

    # when the report is asked for by the instance's id and by its name, then both give the same rows
    by_name = rows("demo")
    assert by_name and rows(str(managed_instance.pk)) == by_name
    # and an id no instance has, or digits no id can be, is a 400 naming the filter (never a 500)
    for unknown in ("987654321", "9" * 30, "²"):
        response = api.get("/api/v1/entitlements/", {"instance": unknown, "at": "2999-01-01"})
        assert response.status_code == 400 and "instance" in response.json()["errors"], unknown


def test_the_schema_documents_the_instance_filter_as_an_id_or_a_name(people, api_for):
    schema = api_for("carol").get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/entitlements/"]["get"]["parameters"]}
    assert "id or name" in parameters["instance"]["description"]


def test_entitlements_page_highlights_unexplained(people, web_for, managed_instance, cluster_world):
    build_world(people, managed_instance, role=ROLE, schema=SCHEMA)
    body = web_for("bob").get("/entitlements/", {"instance": "demo", "schema": SCHEMA}).content.decode()
    assert ROGUE in body and "unexplained" in body and "table-danger" in body
    assert ROLE in body and "bob" in body
