"""The migration that claims the names of requests open before reservations existed (#14)."""

from __future__ import annotations

import importlib

from django.apps import apps

from portal.models import ChangeRequest, NameReservation, Team

backfill = importlib.import_module("portal.migrations.0006_name_reservation_backfill").backfill


def stored(instance, team, type_: str, payload: dict, status: str) -> ChangeRequest:
    return ChangeRequest.objects.create(type=type_, instance=instance, team=team, justification="old",
                                        payload=payload, plan=[], plan_hash="0" * 64, status=status)


def test_open_requests_of_before_get_their_names_and_the_oldest_keeps_a_shared_one(people, managed_instance):
    # given requests stored before reservations: two open ones asking for the same owner role
    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    older = stored(managed_instance, payments, "schema", {"database": "app", "name": "pay", "owner_role": "shared"},
                   "approved")
    newer = stored(managed_instance, analytics, "schema", {"database": "app", "name": "ana", "owner_role": "shared"},
                   "submitted")
    role = stored(managed_instance, payments, "role", {"name": "svc", "login": True}, "queued")
    stored(managed_instance, payments, "role", {"name": "gone", "login": True}, "applied")
    stored(managed_instance, payments, "grant", {"role": "svc", "schema": "pay"}, "submitted")
    # when the migration runs
    backfill(apps, None)
    # then each open request holds its names, the older one the shared owner role, finished ones none
    held = set(NameReservation.objects.values_list("request_id", "kind", "database", "name"))
    assert held == {(older.pk, "schema", "app", "pay"), (older.pk, "role", "", "shared"),
                    (newer.pk, "schema", "app", "ana"), (role.pk, "role", "", "svc")}
    # and running it again changes nothing
    backfill(apps, None)
    assert NameReservation.objects.count() == 4
