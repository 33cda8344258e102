"""plan_context_for: the portal's records a plan validates against, read in one query per kind."""

from __future__ import annotations

from django.utils import timezone

from portal.models import Instance, InstanceInventory, ManagedRole, ManagedSchema, Team
from portal.personas import user_groups
from portal.selectors.plan_context import plan_context_for
from provisioning.plans.context import REQUESTER, REVIEWER, SYSTEM


def test_the_context_holds_the_instances_records_inventory_and_the_callers_persona(
        people, django_assert_max_num_queries):
    # given an instance with an inventory, two teams' roles (one dropped) and a schema
    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    instance = Instance.objects.create(name="ctx", host="127.0.0.1", admin_user="postgres", environment="staging")
    InstanceInventory.objects.create(instance=instance, snapshot={"roles": {}, "databases": {}},
                                     refreshed_at=timezone.now())
    ManagedRole.objects.create(instance=instance, name="pay_owner", login=False, team=payments)
    ManagedRole.objects.create(instance=instance, name="old_svc", login=True, team=payments, dropped_at=timezone.now())
    ManagedRole.objects.create(instance=instance, name="ana_owner", login=False, team=analytics)
    ManagedSchema.objects.create(instance=instance, database="app", name="pay", owner_role="pay_owner", team=payments)
    alice, bob = people["alice"], people["bob"]
    user_groups(alice)  # loaded once per HTTP request anyway (the requester check, token auth)
    # when a grant's context is read: inventory, roles, schemas
    with django_assert_max_num_queries(3):
        ctx = plan_context_for(instance, payments, alice, request_type="grant")
    # then it names the instance, the team and what the portal made there
    assert (ctx.instance.name, ctx.instance.environment, ctx.instance.replica_of) == ("ctx", "staging", None)
    assert (ctx.team_id, ctx.team, ctx.persona, ctx.inventory) == (payments.pk, "payments", REQUESTER,
                                                                   {"roles": {}, "databases": {}})
    assert ctx.role("pay_owner").team_id == payments.pk and ctx.role("old_svc") is None
    assert ctx.role("old_svc", include_dropped=True).dropped
    assert set(ctx.team_group_roles()) == {"pay_owner"}
    assert ctx.schema("app", "pay").owner_role == "pay_owner"
    # and the caller's persona: a reviewer, or the system for a request nobody typed
    assert plan_context_for(instance, payments, bob, request_type="revoke").persona == REVIEWER
    assert plan_context_for(instance, payments, None, request_type="revoke").persona == SYSTEM
    # a type reads only what its validation consults
    ddl = plan_context_for(instance, payments, alice, request_type="ddl")
    assert ddl.roles == {} and ddl.inventory is None and ddl.enabled_ddl_rules
    assert "ctx" in plan_context_for(instance, None, alice, request_type="replica").instance_names


def test_an_inventory_never_read_is_none_so_plans_refuse_to_validate_blindly(people):
    instance = Instance.objects.create(name="blind", host="127.0.0.1", admin_user="postgres")
    InstanceInventory.objects.create(instance=instance, snapshot={"roles": {}}, refreshed_at=None)
    assert plan_context_for(instance, None, None, request_type="schema").inventory is None
