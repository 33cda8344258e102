"""Attacks on names (#14, items 5 and 6): each one refused, or stopped before it changes anything.

- a second open request for the same role or schema (any team) is a 409 naming the holder, also
  when both are submitted at the same instant (the database's unique constraint decides);
- one team's role never owns another team's schema: not by naming it as the owner, not by racing
  for a new owner role, not by a role made on the cluster after the review (the plan's assertions);
- a cross-team grant waits for the owning team's lead whatever the policy row says;
- a name is judged whole: a trailing newline, an invisible or a look-alike character is refused,
  in plain words, by the same rule in the API, the forms and the plans.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from psycopg import sql

from portal.choices import RequestStatus
from portal.errors import NameConflict
from portal.models import ApprovalPolicy, ChangeRequest, ManagedRole, ManagedSchema, NameReservation, Team
from portal.services.requests import request_cancel, request_reject, request_retry, request_submit
from provisioning.outbox import enqueue_apply
from tests.portal.requests_helpers import apply_for_test, unique
from tests.provisioning.helpers import admin_conn, approved_request, schema_payload


@pytest.fixture
def world(people, managed_instance):
    return {"instance": managed_instance, "payments": Team.objects.get(name="payments"),
            "analytics": Team.objects.get(name="analytics"), **people}


def post(api_for, who: str, team: str, type_: str, payload: dict):
    return api_for(who).post("/api/v1/requests/", {"type": type_, "instance": "demo", "team": team,
                                                   "justification": "security test", "payload": payload},
                             format="json")


def submit(world, who: str, team: str, type_: str, payload: dict) -> ChangeRequest:
    return request_submit(user=world[who], actor_ip=None, type=type_, instance=world["instance"],
                          team=world[team], justification="security test", payload=payload)


def cluster_has(cluster, query: str, *params) -> bool:
    with admin_conn(cluster) as conn:
        return bool(conn.execute(query, params).fetchone()[0])


# --- item 5: one open claim per name ----------------------------------------------------------


def test_a_second_team_claiming_the_same_new_owner_role_is_a_409_naming_the_holder(world, api_for):
    # given payments asked for a schema owned by a new role "shared_..." (not applied yet)
    owner = unique("shared")
    first = post(api_for, "alice", "payments", "schema", {"database": "app", "name": unique("pay"), "owner_role": owner})
    assert first.status_code == 201, first.json()
    # when analytics asks for a schema of its own owned by the same new role
    second = post(api_for, "dave", "analytics", "schema",
                  {"database": "app", "name": unique("ana"), "owner_role": owner})
    # then it is a 409 on payload.owner_role naming payments' request, and nothing is stored
    assert second.status_code == 409, second.json()
    body = second.json()
    assert set(body["errors"]) == {"payload.owner_role"}
    assert f"request #{first.json()['id']}" in body["errors"]["payload.owner_role"][0]
    assert f"request #{first.json()['id']}" in body["detail"]
    assert ChangeRequest.objects.filter(team__name="analytics").count() == 0
    assert list(NameReservation.objects.values_list("request_id", flat=True).distinct()) == [first.json()["id"]]


def test_a_second_request_for_the_same_role_or_schema_is_a_409_whatever_the_team(world, api_for):
    # given payments' open requests for a role and a schema
    role, schema = unique("svc"), unique("sch")
    role_id = post(api_for, "alice", "payments", "role", {"name": role, "login": True}).json()["id"]
    schema_id = post(api_for, "alice", "payments", "schema", {"database": "app", "name": schema}).json()["id"]
    # when analytics, or payments itself, asks for the same names again
    for who, team in (("dave", "analytics"), ("alice", "payments")):
        again_role = post(api_for, who, team, "role", {"name": role, "login": False})
        again_schema = post(api_for, who, team, "schema", {"database": "app", "name": schema,
                                                          "owner_role": unique("other_owner")})
        # then both are 409s on payload.name naming the holder
        assert again_role.status_code == 409 and f"#{role_id}" in again_role.json()["errors"]["payload.name"][0]
        assert again_schema.status_code == 409
        assert f"#{schema_id}" in again_schema.json()["errors"]["payload.name"][0]
    # and a role request may not take the name of a pending schema's new owner role either
    owner_clash = post(api_for, "dave", "analytics", "role", {"name": f"{schema}_owner", "login": False})
    assert owner_clash.status_code == 409 and f"#{schema_id}" in owner_clash.json()["detail"]


def test_the_request_form_shows_the_409_inline_on_the_field(world, web_for):
    # given payments holds a role name
    role = unique("svc")
    submit(world, "alice", "payments", "role", {"name": role, "login": False})
    # when dave fills in the role form with that name
    response = web_for("dave").post("/requests/new/role/", {
        "instance": world["instance"].pk, "team": world["analytics"].pk, "justification": "x", "name": role})
    # then the page answers 409 with the message next to the name field
    assert response.status_code == 409
    form = response.context["form"]
    assert "already claimed by request #" in " ".join(form.errors["name"])
    assert ChangeRequest.objects.filter(team__name="analytics").count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_two_teams_submitting_the_same_role_at_the_same_instant_get_one_request_and_one_409(
        people, managed_instance, round_):
    # given two teams that both want role "race_..." (neither request exists yet)
    name = unique("race")
    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(index: int, user, team) -> None:
        try:
            barrier.wait()
            results[index] = request_submit(user=user, actor_ip=None, type="role", instance=managed_instance,
                                            team=team, justification="race", payload={"name": name, "login": False})
        except Exception as exc:  # noqa: BLE001 - the test inspects what each side got
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(0, people["alice"], payments)),
               threading.Thread(target=run, args=(1, people["dave"], analytics))]
    # when both submit at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # then exactly one request exists, and the other side got a 409 naming it
    made = [r for r in results if isinstance(r, ChangeRequest)]
    refused = [r for r in results if isinstance(r, NameConflict)]
    assert len(made) == 1 and len(refused) == 1, results
    assert refused[0].holder_id == made[0].pk and f"#{made[0].pk}" in refused[0].detail
    assert ChangeRequest.objects.filter(payload__name=name).count() == 1
    assert NameReservation.objects.filter(name=name).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_unique_constraint_decides_even_when_both_submits_passed_the_early_check(people, managed_instance):
    # given payments' submit has inserted its claim but not committed yet (its transaction is open)
    name = unique("slow")
    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    claimed, outcome = threading.Event(), {}

    def payments_submits() -> None:
        try:
            with transaction.atomic():
                outcome["payments"] = request_submit(user=people["alice"], actor_ip=None, type="role",
                                                     instance=managed_instance, team=payments, justification="x",
                                                     payload={"name": name, "login": False})
                claimed.set()
                # hold the transaction open until analytics' insert waits on our row
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not _someone_waits_for_a_lock():
                    time.sleep(0.05)
        finally:
            connection.close()

    def analytics_submits() -> None:
        try:
            claimed.wait(30)
            # no read can see payments' uncommitted row: only the insert's unique index stops us
            outcome["analytics"] = request_submit(user=people["dave"], actor_ip=None, type="role",
                                                  instance=managed_instance, team=analytics, justification="x",
                                                  payload={"name": name, "login": False})
        except Exception as exc:  # noqa: BLE001
            outcome["analytics"] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=payments_submits), threading.Thread(target=analytics_submits)]
    # when analytics submits while payments' claim is in flight
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # then analytics waited for payments' commit and got the 409 naming payments' request
    assert isinstance(outcome["payments"], ChangeRequest)
    assert isinstance(outcome["analytics"], NameConflict), outcome
    assert outcome["analytics"].holder_id == outcome["payments"].pk
    assert list(ChangeRequest.objects.filter(payload__name=name).values_list("team__name", flat=True)) == ["payments"]


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        # Asked inside payments' open transaction: PostgreSQL keeps the first pg_stat_activity read
        # of a transaction for the rest of it, so a read taken before analytics waited would never
        # change (the hold then ran its whole 30 s); clear that snapshot to see the sessions now.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database())")
        return bool(cursor.fetchone()[0])


@pytest.mark.parametrize("ending", ["cancelled", "rejected"])
def test_a_name_is_free_again_once_its_request_is_cancelled_or_rejected(world, ending):
    # given payments' open request for a role
    name = unique("svc")
    first = submit(world, "alice", "payments", "role", {"name": name, "login": False})
    # when it ends without being applied
    if ending == "cancelled":
        request_cancel(request=first, user=world["alice"])
    else:
        request_reject(request=first, reviewer=world["bob"], comment="no")
    # then its claim is gone (same transaction) and analytics may ask for the name
    assert not NameReservation.objects.filter(request=first).exists()
    second = submit(world, "dave", "analytics", "role", {"name": name, "login": False})
    assert NameReservation.objects.get(name=name).request_id == second.pk


def test_an_applied_name_lives_in_the_managed_records_and_a_failed_retry_claims_again(
        transactional_db, world, managed_cluster, celery_worker, wait_for_status):
    # given payments' role request, approved and applied by a real worker
    name = unique("svc")
    applied = submit(world, "alice", "payments", "role", {"name": name, "login": False})
    applied = _approve_and_wait(world, applied, wait_for_status)
    assert applied.status == RequestStatus.APPLIED, applied.status_detail
    # then the claim is released and the name is the portal's record of payments' role
    assert not NameReservation.objects.filter(request=applied).exists()
    assert ManagedRole.objects.get(name=name).team.name == "payments"
    # and a new request for it is refused as existing (400), no longer as claimed
    with pytest.raises(Exception) as caught:
        submit(world, "dave", "analytics", "role", {"name": name, "login": False})
    assert getattr(caught.value, "status_code", None) == 400 and "already exists" in str(caught.value)

    # given another role request that fails at apply (a DBA made the role meanwhile)
    other = unique("svc")
    doomed = submit(world, "alice", "payments", "role", {"name": other, "login": False})
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(other)))
    doomed = _approve_and_wait(world, doomed, wait_for_status, statuses={"applied", "failed"})
    # then it failed on the plan's assertion, naming what changed, and released its claim
    assert doomed.status == RequestStatus.FAILED
    assert "no longer true that the role does not exist yet" in doomed.status_detail
    assert not NameReservation.objects.filter(request=doomed).exists()
    # and when the DBA drops the role and a reviewer retries, the retry claims the name again
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(other)))
    request_retry(request=doomed, user=world["bob"])
    assert NameReservation.objects.get(name=other).request_id == doomed.pk
    assert wait_for_status(doomed.pk, {"applied", "failed"}).status == RequestStatus.APPLIED


def _approve_and_wait(world, request: ChangeRequest, wait_for_status, statuses=frozenset({"applied", "failed"})):
    from portal.services.requests import request_approve

    request_approve(request=request, reviewer=world["bob"], comment="ok")
    return wait_for_status(request.pk, set(statuses))


# --- item 5: one team's role never owns another team's schema ---------------------------------


def test_another_teams_existing_role_cannot_own_our_schema(world, api_for):
    # given payments' applied schema with its owner role (both on the cluster and in the records)
    theirs = submit(world, "alice", "payments", "schema", {"database": "app", "name": unique("pay")})
    apply_for_test(theirs)
    # when analytics asks for a schema owned by payments' owner role
    response = post(api_for, "dave", "analytics", "schema",
                    {"database": "app", "name": unique("ana"), "owner_role": theirs.payload["owner_role"]})
    # then it is refused on payload.owner_role
    assert response.status_code == 400, response.json()
    assert "not a group role of team analytics" in response.json()["errors"]["payload.owner_role"][0]


def test_the_old_shared_owner_attack_is_stopped_at_apply_even_without_the_reservation(
        transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    # given two approved schema requests of two teams naming the same new owner role (as the portal
    # allowed before reservations, or a stored request from then)
    owner = unique("shared")
    ours, theirs = unique("pay"), unique("ana")
    first = approved_request(managed_instance, "schema", {**schema_payload(ours, owner), "create_owner_role": True},
                             requester=people["alice"], team="payments")
    assert wait_for_status(first.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    second = approved_request(managed_instance, "schema", {**schema_payload(theirs, owner), "create_owner_role": True},
                              requester=people["dave"], team="analytics")
    # when the second is applied
    second = wait_for_status(second.pk, {"applied", "failed"})
    # then it fails, saying the owner role was created meanwhile, and analytics' schema does not exist:
    # payments' role owns nothing of analytics
    assert second.status == RequestStatus.FAILED
    assert f"the owner role {owner!r} was created meanwhile (by request #{first.pk})" in second.status_detail
    assert not cluster_has(managed_cluster, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", theirs)
    assert not ManagedSchema.objects.filter(name=theirs).exists()
    assert ManagedRole.objects.get(name=owner).team.name == "payments"


def test_a_role_made_on_the_cluster_after_the_review_never_becomes_the_schemas_owner(
        transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    # given an approved schema request that creates its owner role, not yet applied
    name, owner = unique("pay"), unique("own")
    request = approved_request(managed_instance, "schema", {**schema_payload(name, owner), "create_owner_role": True},
                               requester=people["alice"], team="payments", enqueue=False)
    # and a role of that name made directly on the cluster meanwhile (by someone else)
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
    # when the worker applies it
    with transaction.atomic():
        enqueue_apply(request)
    request = wait_for_status(request.pk, {"applied", "failed"})
    # then the plan's assertion stops it with a clear message, and nothing was created
    assert request.status == RequestStatus.FAILED
    assert "cluster changed since the plan was approved" in request.status_detail
    assert "the role does not exist yet" in request.status_detail
    assert not cluster_has(managed_cluster, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", name)


def test_a_reused_owner_role_that_became_a_login_role_stops_the_plan(
        transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    # given payments' schema with its owner role, and a second schema request reusing that role
    first = approved_request(managed_instance, "schema", {**schema_payload(unique("pay")), "create_owner_role": True},
                             requester=people["alice"], team="payments")
    assert wait_for_status(first.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    owner, name = first.payload["owner_role"], unique("pay")
    second = approved_request(managed_instance, "schema", {**schema_payload(name, owner), "create_owner_role": False},
                              requester=people["alice"], team="payments", enqueue=False)
    # when someone turns the owner role into a login role on the cluster before the apply
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(owner)))
    with transaction.atomic():
        enqueue_apply(second)
    second = wait_for_status(second.pk, {"applied", "failed"})
    # then the assertion "exists and cannot log in" stops it
    assert second.status == RequestStatus.FAILED
    assert "the owner role exists and is a group role that cannot log in" in second.status_detail
    assert not cluster_has(managed_cluster, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", name)


def test_a_reused_owner_role_must_still_be_the_requesting_teams_at_apply(
        transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    # given a schema request of analytics that reuses payments' owner role (stored without the checks)
    first = approved_request(managed_instance, "schema", {**schema_payload(unique("pay")), "create_owner_role": True},
                             requester=people["alice"], team="payments")
    assert wait_for_status(first.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    name = unique("ana")
    second = approved_request(managed_instance, "schema",
                              {**schema_payload(name, first.payload["owner_role"]), "create_owner_role": False},
                              requester=people["dave"], team="analytics")
    # when it is applied, then the portal's records refuse it before the cluster is touched
    second = wait_for_status(second.pk, {"applied", "failed"})
    assert second.status == RequestStatus.FAILED
    assert "is no longer a group role of team analytics" in second.status_detail
    assert not cluster_has(managed_cluster, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", name)


def test_a_cross_team_grant_waits_for_the_owning_teams_lead_even_when_the_policy_says_otherwise(
        world, api_for):
    # given analytics owns a schema, payments has a role, and an admin switched the owner-lead rule off
    schema = submit(world, "dave", "analytics", "schema", {"database": "app", "name": unique("rep")})
    apply_for_test(schema)
    role = submit(world, "alice", "payments", "role", {"name": unique("rd"), "login": False})
    apply_for_test(role)
    ApprovalPolicy.objects.filter(request_type="grant").update(require_owner_lead=False)
    # when alice asks to read analytics' schema and a reviewer approves
    response = post(api_for, "alice", "payments", "grant", {"role": role.payload["name"], "database": "app",
                                                           "schema": schema.payload["name"],
                                                           "privileges": ["SELECT"]})
    assert response.status_code == 201, response.json()
    request_id = response.json()["id"]
    assert response.json()["review"]["requires_owner_lead"] is True
    after_bob = api_for("bob").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").json()
    # then it still waits for analytics' lead, and dave's approval completes it
    assert after_bob["status"] == "submitted"
    after_dave = api_for("dave").post(f"/api/v1/requests/{request_id}/approve/", {}, format="json").json()
    assert after_dave["status"] == "queued"


# --- item 6: one name rule, whole string -------------------------------------------------------

REFUSED_NAMES = {
    "trailing newline": ("payments_svc\n", "U+000A LINE FEED"),
    "carriage return": ("payments_svc\r", "U+000D CARRIAGE RETURN"),
    "zero-width space": ("payments\u200b_svc", "U+200B ZERO WIDTH SPACE"),
    "zero-width joiner": ("payments_svc\u200d", "U+200D ZERO WIDTH JOINER"),
    "word joiner": ("payments\u2060svc", "U+2060 WORD JOINER"),
    "byte order mark": ("\ufeffpayments_svc", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    "bidi override": ("svc_\u202enimda", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    "no-break space": ("payments\u00a0svc", "U+00A0 NO-BREAK SPACE"),
    "line separator": ("payments\u2028svc", "U+2028 LINE SEPARATOR"),
    "Cyrillic look-alike": ("p\u0430yments_svc", "U+0430 CYRILLIC SMALL LETTER A"),
    "Greek look-alike": ("payments_svc\u03bf", "U+03BF GREEK SMALL LETTER OMICRON"),
    "fullwidth letters": ("\uff50ayments", "U+FF50 FULLWIDTH LATIN SMALL LETTER P"),
    "accented letter": ("caf\u00e9", "U+00E9 LATIN SMALL LETTER E WITH ACUTE"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_NAMES))
def test_a_name_with_an_invisible_or_look_alike_character_is_refused_in_plain_words(world, api_for, case):
    # given a name that prints like a plain one (or like payments_svc)
    name, character = REFUSED_NAMES[case]
    # when it is asked for as a role, as a schema and as an owner role
    answers = [
        post(api_for, "alice", "payments", "role", {"name": name, "login": True}),
        post(api_for, "alice", "payments", "schema", {"database": "app", "name": name}),
        post(api_for, "alice", "payments", "schema", {"database": "app", "name": unique("sch"), "owner_role": name}),
    ]
    # then each is a 400 on its field naming the character, with no pattern shown, and nothing stored
    for response, field in zip(answers, ["payload.name", "payload.name", "payload.owner_role"], strict=True):
        assert response.status_code == 400, response.json()
        message = response.json()["errors"][field][0]
        assert character in message
        assert not any(token in message for token in ("^[", "]*$", "\\Z", "regex"))
    assert not ChangeRequest.objects.exists()


def test_the_newline_name_through_the_web_form_is_refused_on_its_field(world, web_for):
    # given alice's role form with "name\n" typed (the form used to strip it silently)
    response = web_for("alice").post("/requests/new/role/", {
        "instance": world["instance"].pk, "team": world["payments"].pk, "justification": "x",
        "name": "payments_svc\n", "login": "on"})
    # then the same rule as the API refuses it inline
    assert response.status_code == 400
    assert "U+000A LINE FEED" in " ".join(response.context["form"].errors["name"])
    assert not ChangeRequest.objects.exists()


def test_the_newline_name_never_reaches_the_cluster_as_a_second_role(world, managed_cluster):
    # given a role "payments_svc_..." that exists
    name = unique("svc")
    apply_for_test(submit(world, "alice", "payments", "role", {"name": name, "login": False}))
    # when someone asks for the same name with a trailing newline, then it is refused before any plan
    with pytest.raises(Exception) as caught:
        submit(world, "dave", "analytics", "role", {"name": f"{name}\n", "login": False})
    assert getattr(caught.value, "status_code", None) == 400
    # and the cluster holds exactly one role that reads like it
    with admin_conn(managed_cluster) as conn:
        look_alikes = conn.execute("SELECT count(*) FROM pg_roles WHERE trim(rolname, E' \\n\\r\\t') = %s",
                                   (name,)).fetchone()[0]
    assert look_alikes == 1


def test_a_payload_given_back_cannot_flip_the_owner_decision(world, api_for):
    # given a schema whose owner role does not exist yet, when the client claims it exists
    response = post(api_for, "alice", "payments", "schema",
                    {"database": "app", "name": unique("sch"), "create_owner_role": False})
    # then it is refused: the decision is the portal's, derived from the cluster and its records
    assert response.status_code == 400
    assert "payload.create_owner_role" in response.json()["errors"]
