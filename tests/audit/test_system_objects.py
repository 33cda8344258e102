"""Deleting a system-level object is an event in the deleting transaction (PCI DSS 10.2.1.7),
whichever way it happens; the actor is the signed-in user of the request that deleted it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import RequestFactory

from audit.models import AuditEvent
from portal.models import ApprovalPolicy, Instance, Team
from portal.services.system_objects import current_request

pytestmark = pytest.mark.django_db


def _deleted(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_deleting_each_kind_of_system_object_records_it():
    team = Team.objects.create(name="gone-team")
    instance = Instance.objects.create(name="gone-db", host="127.0.0.1", port=5999, admin_user="postgres")
    policy = ApprovalPolicy.objects.create(environment="dev", request_type="role", risk="low")
    group = Group.objects.create(name="temporary-persona")
    user = User.objects.create_user("leaver", is_superuser=True)
    for obj in (team, instance, policy, group, user):
        obj.delete()

    (team_event,) = _deleted("team.deleted")
    assert team_event.details == {"name": "gone-team"} and team_event.outcome == "ok"
    assert team_event.actor == "system" and team_event.object_type == "team"
    (instance_event,) = _deleted("instance.deleted")
    assert instance_event.instance == "gone-db" and instance_event.details["port"] == 5999
    assert _deleted("policy.deleted")[0].details["request_type"] == "role"
    assert _deleted("persona.deleted")[0].details == {"name": "temporary-persona"}
    assert _deleted("user.deleted")[0].details == {"username": "leaver", "is_active": True, "is_superuser": True}


def test_a_rolled_back_deletion_leaves_no_event():
    team = Team.objects.create(name="kept-team")
    with pytest.raises(RuntimeError), transaction.atomic():
        team.delete()
        raise RuntimeError("the deleting transaction fails")
    assert Team.objects.filter(name="kept-team").exists()
    assert not _deleted("team.deleted")


def test_the_actor_is_the_user_of_the_request_that_deleted():
    admin = User.objects.create_user("platform-admin")
    request = RequestFactory().post("/anything/", REMOTE_ADDR="127.0.0.7")
    request.user = admin
    token = current_request.set(request)
    try:
        Team.objects.create(name="by-request").delete()
    finally:
        current_request.reset(token)
    (event,) = _deleted("team.deleted")
    assert (event.actor, event.actor_ip) == ("platform-admin", "127.0.0.7")
