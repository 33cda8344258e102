"""The PlanContext a plan validates against, read from the portal's records in a few queries."""

from __future__ import annotations

from typing import Any

from portal.choices import RequestType
from portal.models import Instance, InstanceInventory, ManagedRole, ManagedSchema
from portal.personas import is_reviewer
from portal.selectors.ddl_rules import enabled_rules
from provisioning.plans.context import (
    REQUESTER,
    REVIEWER,
    SYSTEM,
    ManagedRoleFact,
    ManagedSchemaFact,
    PlanContext,
    facts_of_instance,
)

# What each type's validation consults. Reading only that keeps a submit to the queries it needed
# when the plans read the records themselves (tests/api/test_query_counts.py pins them).
_NEEDS: dict[str, frozenset[str]] = {
    RequestType.SCHEMA: frozenset({"inventory", "roles", "schemas"}),
    RequestType.ROLE: frozenset({"inventory", "roles"}),
    RequestType.GRANT: frozenset({"inventory", "roles", "schemas"}),
    RequestType.REVOKE: frozenset({"inventory", "roles", "schemas"}),
    RequestType.DDL: frozenset({"schemas", "ddl_rules"}),
    RequestType.REPLICA: frozenset({"instance_names"}),
    RequestType.RESTORE: frozenset({"instance_names"}),
    RequestType.DISABLE: frozenset({"inventory", "roles"}),
    RequestType.TERMINATE: frozenset({"roles"}),
}
_EVERYTHING = frozenset().union(*_NEEDS.values())
_UNREAD = object()


def plan_context_for(instance: Instance, team: Any, user: Any, *, request_type: str | None = None,
                     inventory: Any = _UNREAD) -> PlanContext:
    """The context of a request of `request_type` by `user` for `team` on `instance`.

    request_type None: everything (one query per kind of fact). `inventory`: the instance's
    InstanceInventory row when the caller has just read or refreshed it (None: it has none), so
    it is not read twice. `user` None: a system request (expiry, drift), which may revoke anything.
    The managed roles and schemas are the instance's all: as many rows as its inventory already
    holds, in one query each, and the plans look names up in memory.
    """
    needs = _NEEDS.get(request_type or "", _EVERYTHING)
    snapshot = None
    if "inventory" in needs:
        if inventory is _UNREAD:
            inventory = InstanceInventory.objects.filter(instance=instance).first()
        if inventory is not None and inventory.refreshed_at is not None:
            snapshot = inventory.snapshot
    roles: dict[str, ManagedRoleFact] = {}
    if "roles" in needs:
        roles = {name: ManagedRoleFact(name=name, team_id=team_id, login=login, dropped=dropped_at is not None,
                                       request_id=request_id)
                 for name, team_id, login, dropped_at, request_id in ManagedRole.objects.filter(instance=instance)
                 .order_by("pk").values_list("name", "team_id", "login", "dropped_at", "request_id")}
    schemas: dict[tuple[str, str], ManagedSchemaFact] = {}
    if "schemas" in needs:
        schemas = {(database, name): ManagedSchemaFact(database=database, name=name, owner_role=owner,
                                                       team_id=team_id)
                   for database, name, owner, team_id in ManagedSchema.objects.filter(instance=instance)
                   .values_list("database", "name", "owner_role", "team_id")}
    persona = SYSTEM
    if user is not None:
        # The user's groups are cached on the user (the requester check has read them already).
        persona = REVIEWER if is_reviewer(user) else REQUESTER
    return PlanContext(
        instance=facts_of_instance(instance),
        team_id=getattr(team, "pk", None), team_name=str(team) if team is not None else None,
        persona=persona, inventory=snapshot, roles=roles, schemas=schemas,
        instance_names=frozenset(Instance.objects.values_list("name", flat=True))
        if "instance_names" in needs else frozenset(),
        enabled_ddl_rules=frozenset(enabled_rules(instance.environment)) if "ddl_rules" in needs else None,
    )
