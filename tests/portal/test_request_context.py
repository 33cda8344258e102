"""Reviewers' context on a request (#19 item 3): the access diff on a grant and a revoke read from a
real cluster, who else reaches the schema, the sessions of the role, the requester's recent
requests, approval progress, an unreachable instance, who may see it, and landing on the next item."""

from __future__ import annotations

import psycopg
import pytest
from django.urls import reverse
from psycopg import sql

from portal.models import Approval
from provisioning.connections import connect
from tests.portal.requests_helpers import unique
from tests.portal.ui_helpers import dev_instance, given_request

pytestmark = pytest.mark.django_db

ROLE_PASSWORD = "context-test-Pw-1"


@pytest.fixture
def schema_setup(managed_instance):
    """On the real cluster: schema S (owned by O) with tables t1 and t2; role R holds USAGE and SELECT
    on t1 only, and can log in; role X holds SELECT on both tables; login role M is a member of X."""
    names = {key: unique(key) for key in ("ctx", "own", "rep", "oth", "mem")}
    ident = {key: sql.Identifier(value) for key, value in names.items()}
    with connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident["own"]))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident["rep"], sql.Literal(ROLE_PASSWORD)))
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident["oth"]))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(ident["mem"], ident["oth"]))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident["ctx"], ident["own"]))
        for table in ("t1", "t2"):
            conn.execute(sql.SQL("CREATE TABLE {}.{} (id int)").format(ident["ctx"], sql.Identifier(table)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(ident["ctx"], ident["rep"], ident["oth"]))
        conn.execute(sql.SQL("GRANT SELECT ON {}.t1 TO {}").format(ident["ctx"], ident["rep"]))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident["ctx"], ident["oth"]))
    return names


def _request(people, instance, names, *, type: str, privileges: list[str], tables="all"):
    return given_request(requester=people["alice"], instance=instance, type=type,
                         payload={"role": names["rep"], "database": "app", "schema": names["ctx"],
                                  "privileges": privileges, "tables": tables, "default_privileges": False,
                                  "schema_owner": names["own"]})


def _diff(payload: dict) -> dict[str, dict]:
    return {row["privilege"]: row for row in payload["diff"]}


def test_grant_context_shows_the_diff_flags_redundant_privileges_and_who_else_reaches(
        api_for, people, managed_instance, schema_setup):
    # given a grant of USAGE, SELECT and INSERT on all tables to a role holding USAGE and SELECT on t1
    change = _request(people, managed_instance, schema_setup, type="grant", privileges=["USAGE", "SELECT", "INSERT"])
    # when a reviewer reads the context
    response = api_for("bob").get(f"/api/v1/requests/{change.pk}/context/")
    # then USAGE is redundant, SELECT goes from one table to all, INSERT is new
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["unreachable"] == "" and body["schema_exists"] is True
    diff = _diff(body)
    assert diff["USAGE"] == {"privilege": "USAGE", "now": "on the schema", "after": "on the schema (unchanged)",
                             "flag": "redundant"}
    assert diff["SELECT"]["now"] == "1 of 2 tables" and diff["SELECT"]["flag"] == "added"
    assert diff["INSERT"]["now"] == "" and diff["INSERT"]["flag"] == "added"
    assert body["redundant"] == ["USAGE"]
    # and the other role's SELECT on both tables is listed, with the login role reaching it as a member
    reach = {row["grantee"]: row for row in body["reach"]}
    other = reach[schema_setup["oth"]]
    assert "table: SELECT ×2" in other["how"] and other["members"] == [schema_setup["mem"]]
    assert reach[schema_setup["own"]]["owner"] is True
    assert schema_setup["rep"] not in reach
    assert body["progress"] == {"count": 0, "required": body["progress"]["required"], "approvers": [],
                                "satisfied": False, "lead_team": body["progress"]["lead_team"],
                                "lead_approved": False}


def test_grant_of_a_table_the_role_already_reads_is_redundant(api_for, people, managed_instance, schema_setup):
    change = _request(people, managed_instance, schema_setup, type="grant", privileges=["SELECT"], tables=["t1"])
    diff = _diff(api_for("bob").get(f"/api/v1/requests/{change.pk}/context/").json())
    assert diff["SELECT"]["flag"] == "redundant" and diff["USAGE"]["flag"] == "redundant"


def test_revoke_context_names_the_sessions_it_touches(web_for, people, managed_instance, schema_setup):
    # given an open session of the role and a revoke of its SELECT
    change = _request(people, managed_instance, schema_setup, type="revoke", privileges=["SELECT", "UPDATE"])
    session = psycopg.connect(host="127.0.0.1", port=managed_instance.port, dbname="app",
                              user=schema_setup["rep"], password=ROLE_PASSWORD, application_name="ledger-report")
    try:
        pid = session.info.backend_pid
        # when a reviewer opens the context panel
        html = web_for("bob").get(reverse("request-context", args=[change.pk])).content.decode()
    finally:
        session.close()
    # then SELECT is removed, UPDATE was never held, and the session is listed by pid and application
    assert 'data-privilege="SELECT"' in html and "removed" in html and "not held" in html
    assert f"<td>{pid}</td>" in html and "ledger-report" in html
    assert "the ones this revoke takes the privileges from" in html


def test_revoke_diff_over_the_api(api_for, people, managed_instance, schema_setup):
    change = _request(people, managed_instance, schema_setup, type="revoke", privileges=["SELECT"])
    diff = _diff(api_for("admin").get(f"/api/v1/requests/{change.pk}/context/").json())
    assert diff["SELECT"] == {"privilege": "SELECT", "now": "1 of 2 tables", "after": "", "flag": "removed"}
    assert diff["USAGE"]["flag"] == ""  # held, not named: unchanged


def test_unreachable_instance_is_shown_as_such(web_for, api_for, people):
    change = given_request(requester=people["alice"], instance=dev_instance())  # port 1: nothing listens
    response = web_for("bob").get(reverse("request-context", args=[change.pk]))
    assert response.status_code == 200
    assert "could not be read" in response.content.decode() and "connection refused" in response.content.decode()
    body = api_for("bob").get(f"/api/v1/requests/{change.pk}/context/").json()
    assert body["unreachable"].startswith("connection refused") and "diff" not in body


def test_only_reviewers_and_admins_see_the_context(web_for, api_for, people):
    change = given_request(requester=people["alice"], instance=dev_instance())
    assert web_for("alice").get(reverse("request-context", args=[change.pk])).status_code == 403
    assert web_for("dave").get(reverse("request-context", args=[change.pk])).status_code == 404
    assert api_for("carol").get(f"/api/v1/requests/{change.pk}/context/").status_code == 403
    # the requester's own page does not load it
    assert 'id="request-context"' not in web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="request-context"' in web_for("bob").get(reverse("request-detail", args=[change.pk])).content.decode()


def test_progress_names_approvers_and_recent_requests_on_the_schema(web_for, people, django_assert_max_num_queries):
    instance = dev_instance()
    earlier = given_request(requester=people["alice"], instance=instance, status="applied")
    elsewhere = given_request(requester=people["alice"], instance=instance,
                              payload={"role": "r", "database": "app", "schema": "other", "privileges": ["SELECT"],
                                       "tables": "all", "default_privileges": False})
    change = given_request(requester=people["alice"], instance=instance)
    Approval.objects.create(request=change, reviewer=people["admin"], decision="approve", plan_hash=change.plan_hash)
    client = web_for("bob")
    with django_assert_max_num_queries(13):  # 3 of them the session and the nav badge
        html = client.get(reverse("request-context", args=[change.pk])).content.decode()
    assert "Approvals: 1 of" in html and "admin" in html
    assert f"#{earlier.pk}</a>" in html and f"#{elsewhere.pk}</a>" not in html


def test_after_a_decision_the_reviewer_lands_on_the_next_item(web_for, people):
    instance = dev_instance()
    first = given_request(requester=people["alice"], instance=instance, type="schema",
                          payload={"database": "app", "name": "land_a"}, plan=['CREATE SCHEMA "land_a"'])
    second = given_request(requester=people["alice"], instance=instance, type="schema",
                           payload={"database": "app", "name": "land_b"}, plan=['CREATE SCHEMA "land_b"'])
    bob = web_for("bob")
    # from a request's page: the next request's page
    response = bob.post(reverse("request-action", args=[first.pk, "reject"]), {"comment": "no", "land": "next"})
    assert response["Location"] == reverse("request-detail", args=[second.pk])
    # from the queue: the queue, on the next row; with nothing left, the (empty) queue
    third = given_request(requester=people["alice"], instance=instance, type="schema",
                          payload={"database": "app", "name": "land_c"}, plan=['CREATE SCHEMA "land_c"'])
    response = bob.post(reverse("request-action", args=[second.pk, "reject"]),
                        {"comment": "no", "land": "next", "next": reverse("review-queue")})
    assert response["Location"] == f"{reverse('review-queue')}#review-{third.pk}"
    response = bob.post(reverse("request-action", args=[third.pk, "reject"]),
                        {"comment": "no", "land": "next", "next": reverse("review-queue")})
    assert response["Location"] == reverse("review-queue")
    # the dialogs ask for it
    assert 'name="land" value="next"' in bob.get(reverse("request-detail", args=[
        given_request(requester=people["alice"], instance=instance).pk])).content.decode()
