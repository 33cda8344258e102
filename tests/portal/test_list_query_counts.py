"""Every list of the UI and the API that tests/api/test_query_counts.py and test_views_requests.py
do not already hold: its query count with a few rows is its count with many (no query per row).

Each case grows the rows the page lists (instances, teams, members, drift findings, grants and
roles, audit events, search hits) from 1 to 9, through the ORM, and reads the page again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.services import event, record_many
from portal.models import Grant, Instance, ManagedRole, Membership, Team
from provisioning.models import DriftFinding
from tests.portal.ui_helpers import dev_instance, given_request

_serial = itertools.count()


def instances(people, n: int) -> list[str]:
    names = []
    for _ in range(n):
        primary = Instance.objects.create(name=f"qc-{next(_serial)}", environment="dev", host="127.0.0.1", port=1,
                                          admin_user="x", status="reachable", server_version="16")
        replica = Instance.objects.create(name=f"qc-{next(_serial)}", environment="dev", host="127.0.0.1", port=2,
                                          admin_user="x", replica_of=primary)
        names += [primary.name, replica.name]
    return names


def teams(people, n: int) -> list[str]:
    names = []
    for _ in range(n):
        team = Team.objects.create(name=f"qc-team-{next(_serial)}")
        Membership.objects.create(team=team, user=people["alice"], role="lead")
        Membership.objects.create(team=team, user=people["dave"])
        names.append(team.name)
    return names


def members(people, n: int) -> list[str]:
    from django.contrib.auth.models import User

    payments = Team.objects.get(name="payments")
    names = []
    for _ in range(n):
        user = User.objects.create(username=f"qc-user-{next(_serial)}")
        Membership.objects.create(team=payments, user=user)
        names.append(user.username)
    return names


def drift(people, n: int) -> list[str]:
    instance = Instance.objects.get(name="qc-home")
    names = [f"qc_intruder_{next(_serial)}" for _ in range(n)]
    DriftFinding.objects.bulk_create(
        DriftFinding(instance=instance, database="app", kind="unexpected_privilege", role=name,
                     object_type="schema", object_name="s", privilege="USAGE") for name in names)
    return names


def holdings(people, n: int) -> list[str]:
    """Grants (each from its own approved request) and roles of alice's team payments."""
    instance = Instance.objects.get(name="qc-home")
    payments = Team.objects.get(name="payments")
    names = []
    for _ in range(n):
        number = next(_serial)
        change = given_request(requester=people["alice"], instance=instance, team=payments, status="applied")
        Grant.objects.create(instance=instance, database="app", schema="payments", role=f"qc_reader_{number}",
                             privileges=["SELECT"], tables="all", team=payments, request=change)
        ManagedRole.objects.create(instance=instance, name=f"qc_svc_{number}", team=payments, login=True)
        names.append(f"qc_reader_{number}")
    return names


def events(people, n: int) -> list[str]:
    names = [f"qc_object_{next(_serial)}" for _ in range(n)]
    record_many([event("request.submitted", actor=people["alice"], object_type="request", object_id=name,
                       instance="qc-home") for name in names])
    return names


def hits(people, n: int) -> list[str]:
    instance = Instance.objects.get(name="qc-home")
    return [f"#{given_request(requester=people['alice'], instance=instance).pk}" for _ in range(n)]


# (persona, "web" or "api", url, grow)
CASES: list[tuple[str, str, str, Callable]] = [
    ("admin", "web", "/instances/", instances),
    ("alice", "api", "/api/v1/instances/", instances),
    ("admin", "web", "/teams/", teams),
    ("alice", "api", "/api/v1/teams/", teams),
    ("admin", "web", "/teams/{payments}/", members),
    ("bob", "web", "/drift/", drift),
    ("alice", "web", "/access/", holdings),
    ("carol", "web", "/entitlements/?at=2999-01-01", holdings),
    ("carol", "api", "/api/v1/entitlements/?at=2999-01-01", holdings),
    ("carol", "web", "/audit/", events),
    ("alice", "web", "/requests/search/?q=reporting", hits)  # the role each one grants,
]


@pytest.mark.parametrize(("persona", "kind", "url", "grow"), CASES, ids=[f"{kind} {url}" for _, kind, url, _ in CASES])
def test_list_query_count_does_not_grow_with_its_rows(people, api_for, web_for, persona, kind, url, grow):
    dev_instance("qc-home")
    url = url.format(payments=Team.objects.get(name="payments").pk)
    client = api_for(persona) if kind == "api" else web_for(persona)

    def count() -> tuple[int, bytes]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        return len(captured), response.content

    grow(people, 1)
    client.get(url)  # warm the session
    few, _ = count()
    grown = grow(people, 8)
    many, body = count()
    assert many <= few, f"{url}: {few} queries with one row, {many} with nine"
    unlisted = [name for name in grown if name.encode() not in body]
    assert not unlisted, f"{url} does not list the rows it was given: {unlisted}"
