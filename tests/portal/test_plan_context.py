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


def _outcome(module, payload, ctx):
    from portal.errors import InvalidPayload

    try:
        return "ok", module.validate(payload, ctx)
    except InvalidPayload as refusal:
        return "refused", refusal.errors


def test_a_context_of_only_the_payloads_names_validates_exactly_as_the_whole_one(
        people, django_assert_max_num_queries):
    """Submit reads only the role(s), schema and database a payload names (the plan's lookups hook),
    so its cost does not grow with the instance: every answer must be the one the whole context
    gives, and a name the hook forgot is an error, never "absent"."""
    import pytest

    from portal.selectors.plan_context import inventory_slice, lookups_for
    from provisioning.plans import module_for

    # given an instance with many roles and schemas of two teams, in the records and the inventory
    payments, analytics = Team.objects.get(name="payments"), Team.objects.get(name="analytics")
    instance = Instance.objects.create(name="slice", host="127.0.0.1", admin_user="postgres")
    snapshot = {"roles": {"pay_owner": {"login": False}, "pay_login": {"login": True}, "ana_owner": {"login": False},
                          "dba": {"login": True}, **{f"r{i}": {"login": False} for i in range(50)}},
                "databases": {"app": {"schemas": {"pay": {"owner": "pay_owner", "tables": ["t1", "t2"]},
                                                  "ana": {"owner": "ana_owner", "tables": []},
                                                  "wild": {"owner": "dba", "tables": ["x"]},
                                                  **{f"s{i}": {"owner": f"r{i}", "tables": []} for i in range(50)}}},
                              "other": {"schemas": {}}}}
    InstanceInventory.objects.create(instance=instance, snapshot=snapshot, refreshed_at=timezone.now())
    ManagedRole.objects.create(instance=instance, name="pay_owner", login=False, team=payments)
    ManagedRole.objects.create(instance=instance, name="pay_login", login=True, team=payments)
    ManagedRole.objects.create(instance=instance, name="gone", login=False, team=payments, dropped_at=timezone.now())
    ManagedRole.objects.create(instance=instance, name="ana_owner", login=False, team=analytics)
    ManagedSchema.objects.create(instance=instance, database="app", name="pay", owner_role="pay_owner", team=payments)
    ManagedSchema.objects.create(instance=instance, database="app", name="ana", owner_role="ana_owner", team=analytics)
    payloads = {
        "schema": [{"database": "app", "name": "new"}, {"database": "app", "name": "pay"},
                   {"database": "app", "name": "wild"}, {"database": "nope", "name": "x"},
                   {"database": "app", "name": "n2", "owner_role": "pay_owner"},
                   {"database": "app", "name": "n3", "owner_role": "ana_owner"},
                   {"database": "app", "name": "n4", "owner_role": "pay_login"},
                   {"database": "app", "name": "n5", "owner_role": "dba"},
                   {"database": "app", "name": "r1"}, {"database": "app", "name": "gx", "owner_role": "gone"},
                   {"database": 5, "name": ["x"]}, {"database": "app", "name": "s1", "owner_role": None},
                   {"database": "app", "name": "ok", "create_owner_role": False}, "not an object"],
        "role": [{"name": "new", "login": False}, {"name": "pay_owner", "login": True},
                 {"name": "gone", "login": False}, {"name": "r3", "login": False},
                 {"name": "n", "login": True, "member_of": ["pay_owner", "pay_login", "ana_owner", "gone", "dba", 7]},
                 {"name": "n", "login": True, "member_of": "pay_owner"}, {"name": "n", "login": True, "member_of": ["n"]},
                 {"name": 3, "login": "yes"}],
        "grant": [{"role": "pay_owner", "database": "app", "schema": "pay", "privileges": ["SELECT"]},
                  {"role": "pay_owner", "database": "app", "schema": "ana", "privileges": ["USAGE"]},
                  {"role": "ana_owner", "database": "app", "schema": "pay", "privileges": ["USAGE"]},
                  {"role": "pay_login", "database": "app", "schema": "wild", "privileges": ["SELECT"]},
                  {"role": "pay_owner", "database": "app", "schema": "pay", "privileges": ["SELECT"],
                   "tables": ["t1", "t9"], "schema_owner": "x"},
                  {"role": "gone", "database": "other", "schema": "pay", "privileges": ["SELECT"]}],
        "revoke": [{"role": "dba", "database": "app", "schema": "wild", "privileges": ["SELECT"]},
                   {"role": "pay_login", "database": "app", "schema": "ana", "privileges": ["USAGE"]},
                   {"role": "ana_owner", "database": "app", "schema": "pay", "privileges": ["SELECT"],
                    "tables": ["t2"]},
                   {"role": "gone", "database": "app", "schema": "pay", "privileges": ["USAGE"]},
                   {"role": "nobody", "database": "app", "schema": "nothing", "privileges": ["USAGE"]}],
    }
    for request_type, cases in payloads.items():
        module = module_for(request_type)
        for user in (people["alice"], people["bob"], None):
            whole = plan_context_for(instance, payments, user, request_type=request_type)
            for payload in cases:
                lookups = lookups_for(request_type, payload)
                # when only the payload's names are read: the inventory's part, roles, schemas
                with django_assert_max_num_queries(3):
                    ctx = plan_context_for(instance, payments, user, request_type=request_type, lookups=lookups)
                # then the answer is the whole context's, to the message
                assert _outcome(module, payload, ctx) == _outcome(module, payload, whole), (request_type, payload)
    # and a name outside the lookups is a bug that shows, not a missing row
    ctx = plan_context_for(instance, payments, None, request_type="grant", lookups=lookups_for(
        "grant", {"role": "pay_owner", "database": "app", "schema": "pay"}))
    with pytest.raises(LookupError):
        ctx.role("ana_owner")
    with pytest.raises(LookupError):
        ctx.schema("app", "ana")
    # and the inventory's part keeps the snapshot's shape
    part = inventory_slice(instance, lookups_for("grant", {"role": "pay_owner", "database": "app", "schema": "pay"}))
    assert part.snapshot == {"roles": {"pay_owner": {"login": False}},
                             "databases": {"app": {"schemas": {"pay": snapshot["databases"]["app"]["schemas"]["pay"]}}}}
