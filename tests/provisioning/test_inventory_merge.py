"""The stored inventory after an applied batch: the merge rules, on a snapshot written by hand.

provisioning.inventory._merge_into_inventory changes the stored document in one UPDATE (one
subscripted assignment per new entry); tests/provisioning/test_batch.py compares its result with
a fresh read of a real cluster, this file pins each rule, including the rare shapes of a batch.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from portal.choices import RequestType
from portal.models import InstanceInventory
from provisioning.inventory import _merge_into_inventory, _role_entry

pytestmark = pytest.mark.django_db

KNOWN_ROLE = {
    "login": True,
    "superuser": False,
    "createdb": False,
    "createrole": False,
    "replication": False,
    "bypassrls": False,
    "connection_limit": 3,
    "valid_until": None,
    "member_of": ["x"],
}
STORED = {
    "roles": {"app_owner": KNOWN_ROLE, "reader": KNOWN_ROLE},
    "databases": {"app": {"schemas": {"sales": {"owner": "app_owner", "tables": ["orders"]}}}},
}


def _request(type_: str, **payload) -> SimpleNamespace:
    return SimpleNamespace(type=type_, payload=payload)


def _merged(instance, snapshot: dict, batch: list[SimpleNamespace]) -> tuple[bool, dict]:
    InstanceInventory.objects.update_or_create(instance=instance, defaults={"snapshot": snapshot})
    merged = _merge_into_inventory(instance.pk, batch)
    return merged, InstanceInventory.objects.get(instance=instance).snapshot


def test_new_entries_are_added_and_known_ones_kept(managed_instance):
    # given a stored snapshot with two roles and a schema that has a table
    # when a batch brings a schema with a known owner, one with a new owner, the known schema again
    # and a schema in a database the snapshot does not know
    merged, snapshot = _merged(
        managed_instance,
        STORED,
        [
            _request(RequestType.SCHEMA, database="app", name="billing", owner_role="app_owner"),
            _request(RequestType.SCHEMA, database="app", name="events", owner_role="events_owner"),
            _request(RequestType.SCHEMA, database="app", name="sales", owner_role="someone_else"),
            _request(RequestType.SCHEMA, database="reports", name="daily", owner_role=""),
        ],
    )
    # then the known role, schema (its tables included) are as they were; the new ones are added
    assert merged
    assert snapshot["roles"] == {
        "app_owner": KNOWN_ROLE,
        "reader": KNOWN_ROLE,
        "someone_else": _role_entry(login=False, member_of=[]),
        "events_owner": _role_entry(login=False, member_of=[]),
    }
    assert snapshot["databases"] == {
        "app": {
            "schemas": {
                "sales": {"owner": "app_owner", "tables": ["orders"]},
                "billing": {"owner": "app_owner", "tables": []},
                "events": {"owner": "events_owner", "tables": []},
            }
        },
        "reports": {"schemas": {"daily": {"owner": "", "tables": []}}},
    }


def test_a_role_request_replaces_the_stored_entry_and_wins_over_an_owner_of_its_name(managed_instance):
    merged, snapshot = _merged(
        managed_instance,
        STORED,
        [
            _request(RequestType.SCHEMA, database="app", name="audit", owner_role="reader"),
            _request(RequestType.ROLE, name="reader", login=False, member_of=["b", "a"], connection_limit=5),
            _request(RequestType.SCHEMA, database="app", name="ops", owner_role="ops_lead"),
            _request(RequestType.ROLE, name="ops_lead", login=True),
        ],
    )
    assert merged
    assert snapshot["roles"]["reader"] == _role_entry(login=False, member_of=["a", "b"], connection_limit=5)
    assert snapshot["roles"]["ops_lead"] == _role_entry(login=True, member_of=[])
    assert snapshot["roles"]["app_owner"] == KNOWN_ROLE


def test_a_snapshot_without_databases_gets_them(managed_instance):
    merged, snapshot = _merged(
        managed_instance, {"roles": {}}, [_request(RequestType.SCHEMA, database="app", name="s", owner_role="o")]
    )
    assert merged
    assert snapshot == {
        "roles": {"o": _role_entry(login=False, member_of=[])},
        "databases": {"app": {"schemas": {"s": {"owner": "o", "tables": []}}}},
    }


@pytest.mark.parametrize("unusable", [{}, []])
def test_nothing_to_merge_into_is_said(managed_instance, unusable):
    merged, snapshot = _merged(managed_instance, unusable, [_request(RequestType.ROLE, name="r")])
    assert not merged and snapshot == unusable
