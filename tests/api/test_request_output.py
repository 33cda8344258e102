"""The API's hot paths, made cheaper for the load goal, answer exactly as before.

RequestOutput builds its dict directly instead of DRF's field loop, and the token lookup is one
fixed statement that also loads the caller's groups: both are compared here with DRF's own
behaviour on every kind of row and every kind of token.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient, APIRequestFactory

from portal.api.requests import RequestDetailOutput, RequestOutput
from portal.models import ChangeRequest, Execution, Team
from portal.selectors.requests import request_get_for, request_page_for
from portal.services.requests import request_approve, request_submit
from tests.portal.requests_helpers import unique


def _variety(people, instance) -> list[ChangeRequest]:
    """Rows with every optional field both empty and set: owner team, system requester, dates, dry run."""
    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    made = [request_submit(user=people["alice"], actor_ip=None, type="schema", instance=instance, team=payments,
                           justification="output", payload={"database": "app", "name": unique("out")})
            for _ in range(3)]
    request_approve(request=made[1], reviewer=people["bob"], comment="ok")
    now = timezone.now()
    ChangeRequest.objects.filter(pk=made[1].pk).update(
        owner_team=analytics, dry_run={"ok": True, "statements": [{"sql": "SELECT 1", "ms": 0.5}]},
        expires_at=now + timedelta(days=3, microseconds=7), applied_at=now, status_detail="détail ✓")
    # a system request a reviewer filed by hand (a drift revoke): no requester, but a filer
    ChangeRequest.objects.filter(pk=made[2].pk).update(requester=None, filed_by=people["bob"],
                                                       findings=[{"rule": "x", "level": "high"}])
    return list(request_page_for(people["admin"]).filter(pk__in=[r.pk for r in made]))


def test_list_output_is_drfs_own(people, managed_instance):
    rows = _variety(people, managed_instance)
    assert {r.requester_id is None for r in rows} == {True, False}
    assert {r.owner_team_id is None for r in rows} == {True, False}
    assert {r.filed_by_id is None for r in rows} == {True, False}
    for zone in ("UTC", "Europe/Paris", "America/St_Johns"):
        with timezone.override(zone):
            for row in rows:
                generic = serializers.ModelSerializer.to_representation(RequestOutput(), row)
                assert RequestOutput(row).data == generic


def test_detail_output_is_drfs_own(people, managed_instance):
    rows = _variety(people, managed_instance)
    # approvals and executions are built directly too: one finished attempt and one running
    approved = next(row for row in rows if row.status != "submitted")
    started = timezone.now() - timedelta(minutes=5, microseconds=3)
    Execution.objects.create(request=approved, attempt=1, worker="w1", plan_hash=approved.plan_hash,
                             finished_at=started + timedelta(seconds=2), outcome="failed", error="boom ✓",
                             sqlstate="40P01", statements=[{"sql": "CREATE SCHEMA x", "ms": 1.5}])
    Execution.objects.create(request=approved, attempt=2, worker="w2", plan_hash="other")
    api_request = APIRequestFactory().get("/api/v1/requests/")
    for zone in ("UTC", "America/St_Johns"):
        with timezone.override(zone):
            for username in ("bob", "admin", "alice"):
                api_request.user = people[username]
                for row in rows:
                    obj = request_get_for(people[username], row.pk)
                    fast = RequestDetailOutput(obj, context={"request": api_request}).data
                    generic = serializers.ModelSerializer.to_representation(
                        RequestDetailOutput(context={"request": api_request}),
                        request_get_for(people[username], row.pk))
                    assert fast == generic
                    # the API's detail read: the requester's and filer's names annotated, not joined
                    named = request_get_for(people[username], row.pk, user_names=True)
                    assert RequestDetailOutput(named, context={"request": api_request}).data == generic
                    assert set(fast) == set(RequestDetailOutput.Meta.fields)
    shown = RequestDetailOutput(request_get_for(people["bob"], approved.pk), context={"request": api_request}).data
    assert (len(shown["approvals"]), [e["attempt"] for e in shown["executions"]]) == (1, [1, 2])


def test_list_reads_only_the_names_of_related_rows(people, api_for, managed_instance):
    rows = _variety(people, managed_instance)
    body = api_for("bob").get("/api/v1/requests/").json()
    listed = {r["id"]: r for r in body["results"]}
    for row in rows:
        assert listed[row.pk]["instance"] == "demo"
        assert listed[row.pk]["team"] == "payments"
        assert listed[row.pk]["requester"] == (row.requester.username if row.requester_id else "system")
        assert listed[row.pk]["owner_team"] == (row.owner_team.name if row.owner_team_id else None)
        assert listed[row.pk]["filed_by"] == (row.filed_by.username if row.filed_by_id else None)
    # the system request shows who filed it, in the list and in the detail; the others show null
    system = next(row for row in rows if row.requester_id is None)
    assert (listed[system.pk]["requester"], listed[system.pk]["filed_by"]) == ("system", "bob")
    detail = api_for("admin").get(f"/api/v1/requests/{system.pk}/").json()
    assert (detail["requester"], detail["filed_by"]) == ("system", "bob")
    assert {listed[row.pk]["filed_by"] for row in rows if row.pk != system.pk} == {None}


def test_filed_by_is_in_the_openapi_schema_as_a_nullable_username(api_for, people):
    schema = api_for("alice").get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for component in ("RequestOutput", "RequestDetailOutput"):
        field = schema["components"]["schemas"][component]["properties"]["filed_by"]
        assert field["type"] == "string" and field["nullable"] is True and field["readOnly"] is True, field


# --- token authentication ----------------------------------------------------------------------


def _client(header: str | None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client


@pytest.mark.parametrize(("header", "message"), [
    ("Token 0000000000000000000000000000000000000000", "Invalid token."),
    ("Token x\x00y", "Invalid token."),
    ("Token '--OR--'1'='1", "Invalid token."),
    ("Token", "Invalid token header. No credentials provided."),
    ("Token a b", "Invalid token header. Token string should not contain spaces."),
])
def test_bad_tokens_are_401_with_drfs_message(db, header, message):
    response = _client(header).get("/api/v1/requests/")
    assert response.status_code == 401
    assert response.json()["detail"] == message


def test_inactive_users_token_is_refused(people, api_for):
    client = api_for("alice")
    assert client.get("/api/v1/requests/").status_code == 200
    people["alice"].is_active = False
    people["alice"].save(update_fields=["is_active"])
    response = client.get("/api/v1/requests/")
    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


def test_groups_come_with_the_token_and_follow_changes(people, api_for, managed_instance):
    """Scope depends on the groups loaded with the token: a developer made reviewer sees all."""
    _variety(people, managed_instance)
    dave = api_for("dave")  # analytics: none of these payments requests is his
    before = {r["id"] for r in dave.get("/api/v1/requests/").json()["results"]}
    from django.contrib.auth.models import Group

    people["dave"].groups.add(Group.objects.get(name="reviewers"))
    after = {r["id"] for r in dave.get("/api/v1/requests/").json()["results"]}
    assert before < after
    assert set(ChangeRequest.objects.values_list("id", flat=True)) == after
