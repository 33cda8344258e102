"""The permission matrix (tests/portal/permission_matrix.py) against the real views.

Every cell runs in its own savepoint, rolled back afterwards: alice's request is `submitted` for
every persona, whatever the persona before did to it.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from portal.models import (
    AccessReviewCampaign,
    AccessReviewItem,
    ApiToken,
    ApprovalPolicy,
    ChangeSet,
    ChangeSetItem,
    GroupMapping,
    ManagedSchema,
    Team,
    TeamCheck,
)
from portal.services.requests import request_submit
from provisioning.models import DriftFinding
from tests.fixtures.clusters import instance_for
from tests.fixtures.people import seeded_people, token_for
from tests.portal.permission_matrix import PERSONAS, ROWS, USERNAMES, Row

# Routes that are not endpoints of their own: DRF's format-suffix twins share their route's name
# and rows; these patterns have none.
NOT_ENDPOINTS: set[str] = set()


def route_names(resolver=None, namespace: str = "") -> set[str]:
    """Every URL name reachable from the root URLconf, through includes, with namespaces."""
    names = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            names |= route_names(pattern, namespace + (f"{pattern.namespace}:" if pattern.namespace else ""))
        elif isinstance(pattern, URLPattern):
            names.add(namespace + pattern.name if pattern.name else f"<unnamed {pattern.pattern}>")
    return names


def test_every_route_has_rows_in_the_permission_matrix():
    covered = {row.route for row in ROWS}
    missing = sorted(route_names() - covered - NOT_ENDPOINTS)
    assert not missing, (
        "routes without a row in tests/portal/permission_matrix.py (persona × method → status): "
        + ", ".join(missing))


def test_every_row_of_the_matrix_names_a_route_that_exists():
    stale = sorted({row.route for row in ROWS} - route_names())
    assert not stale, f"rows for routes that no longer exist: {', '.join(stale)}"


@pytest.fixture(scope="module")
def _matrix_module(django_db_setup, django_db_blocker, managed_cluster):
    """The people, the instance and the matrix's objects, made once for this module's ~185 tests in
    a transaction rolled back after them (~0.15 s a test when each made its own). Each test runs in
    a savepoint inside it, so what one test changes is undone before the next, as before; the
    objects are handed out as primary keys (and the people's User rows, which no test changes)."""
    module_transaction = transaction.atomic()
    with django_db_blocker.unblock():  # only while making and dropping them: a test asks for its own access
        module_transaction.__enter__()
        try:
            people = seeded_people()
            made = people, build_world(people, instance_for(managed_cluster))
        except BaseException:
            module_transaction.__exit__(*sys.exc_info())
            raise
    yield made
    with django_db_blocker.unblock():
        transaction.set_rollback(True)
        module_transaction.__exit__(None, None, None)


@pytest.fixture
def matrix(db, _matrix_module) -> tuple[dict, dict]:
    """(people, world) of _matrix_module, for a test in its own savepoint."""
    return _matrix_module


@pytest.fixture
def world(people, managed_instance):
    """The matrix's objects made for one test (test_bad_input's walk over the matrix's rows)."""
    return build_world(people, managed_instance)


def build_world(people, managed_instance) -> dict:
    payments = Team.objects.get(name="payments")
    request = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                             team=payments, justification="matrix",
                             payload={"database": "app", "name": "matrix_target"})
    drift = DriftFinding.objects.create(instance=managed_instance, database="app", kind="unexpected_privilege",
                                        role="intruder", object_type="schema", object_name="matrix_target",
                                        privilege="USAGE", detail="granted outside the portal")
    return {
        "request": request.pk, "instance": managed_instance.pk, "team": payments.pk,
        "mapping": GroupMapping.objects.create(group="matrix", persona="requesters").pk,
        "seq": AuditEvent.objects.order_by("seq").values_list("seq", flat=True).first(),
        "policy": ApprovalPolicy.objects.order_by("pk").values_list("pk", flat=True).first(),
        "drift": drift.pk, "change_set": _change_set(people, managed_instance, payments, request),
        **_access_review(people, managed_instance, payments), **_identity(people),
        "team_check": _team_check(people, managed_instance, payments),
    }


def _team_check(people, instance, team) -> int:
    """A drill check of payments (alice leads it) on schema matrix_checks of `demo`'s database app."""
    ManagedSchema.objects.create(instance=instance, database="app", name="matrix_checks", owner_role="matrix_owner",
                                 team=team)
    return TeamCheck.objects.create(instance=instance, team=team, database="app", name="matrix",
                                    sql="SELECT 1 FROM matrix_checks.t", created_by=people["alice"]).pk


def _change_set(people, instance, team, request) -> int:
    """A change set (access as code) holding alice's request."""
    change_set = ChangeSet.objects.create(team=team, instance=instance, created_by=people["alice"],
                                          justification="matrix", document_sha256="0" * 64)
    ChangeSetItem.objects.create(change_set=change_set, request=request, position=0, op="add")
    return change_set.pk


def _access_review(people, instance, team) -> dict:
    """A campaign opened by bob with one item certified by alice (payments' lead), held by dave."""
    campaign = AccessReviewCampaign.objects.create(
        name="matrix", scope={}, deadline=timezone.now() + timedelta(days=3), unanswered_action="revoke",
        fallback_certifier=people["admin"], opened_by=people["bob"])
    item = AccessReviewItem.objects.create(
        campaign=campaign, instance=instance, database="app", schema="matrix_target", role="intruder",
        kind="schema", privileges=["USAGE"], source="outside", owning_team=team, holders=["dave"],
        certifier=people["alice"], certifier_reason="team_lead", evidence={})
    return {"campaign": campaign.pk, "item": item.pk}


def _identity(people) -> dict:
    """An API token of alice (the developer), and dave as the user whose offboarding is previewed."""
    token_for(people["alice"])
    return {"token": ApiToken.objects.filter(user=people["alice"]).latest("pk").pk, "user": people["dave"].pk}


def fill(value, world: dict):
    if isinstance(value, str):
        return value.format(**world) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, world) for v in value]
    return value


class Rollback(Exception):
    pass


def status_of(row: Row, persona: str, world: dict, people) -> int:
    username = USERNAMES[persona]
    path, data = fill(row.path, world), fill(row.data, world)
    if row.path.startswith("/api/"):
        client = APIClient()
        if username:
            client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(people[username])}")
        if row.method == "GET":
            return client.get(path).status_code
        return client.generic(row.method, path, json.dumps(data), content_type="application/json").status_code
    client = Client()
    if username:
        client.force_login(people[username])
    if row.method == "GET":
        return client.get(path).status_code
    return client.generic(row.method, path, _form(data), content_type="application/x-www-form-urlencoded").status_code


def _form(data: dict) -> str:
    from urllib.parse import urlencode

    return urlencode(data)


def in_savepoint(call):
    result = {}
    try:
        with transaction.atomic():
            result["status"] = call()
            raise Rollback
    except Rollback:
        pass
    return result["status"]


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.method} {row.route}" for row in ROWS])
def test_each_persona_gets_the_expected_status(row, matrix):
    people, world = matrix
    actual = {persona: in_savepoint(lambda p=persona: status_of(row, p, world, people)) for persona in PERSONAS}
    wrong = {p: f"expected {row.statuses[p]}, got {actual[p]}" for p in PERSONAS if actual[p] != row.statuses[p]}
    assert not wrong, f"{row.method} {fill(row.path, world)}: {wrong}"


# Every other method of a route must be refused outright. HEAD and OPTIONS are left out: Django
# answers HEAD as GET without the body, DRF answers OPTIONS with the endpoint's metadata.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def test_methods_without_a_row_are_refused_with_405(matrix):
    """The matrix is route × method: a method it has no row for must answer 405. Asked by whoever
    gets furthest: anonymous on a public route (a signed-in user is sent on from /login/ before any
    method check), else the admin, who passes every permission check."""
    people, world = matrix
    rows_of: dict[str, list[Row]] = {}
    for row in ROWS:
        rows_of.setdefault(row.route, []).append(row)
    answered = {}
    for route, rows in rows_of.items():
        listed = {row.method for row in rows}
        public = any(200 <= row.statuses["anonymous"] < 300 for row in rows)
        for method in sorted(set(METHODS) - listed):
            probe = Row(route, method, rows[0].path, rows[0].expect)
            persona = "anonymous" if public else "admin"
            status = in_savepoint(lambda probe=probe, persona=persona: status_of(probe, persona, world, people))
            if status != 405:
                answered[f"{method} {route}"] = status
    assert not answered, f"methods answered without a row in the permission matrix (or not 405): {answered}"
