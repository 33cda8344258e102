"""The PlanContext a plan validates against, read from the portal's records in a few queries."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Q
from psycopg import sql

from portal.choices import RequestType
from portal.models import Instance, InstanceInventory, ManagedRole, ManagedSchema
from portal.personas import is_reviewer
from portal.selectors.ddl_rules import enabled_rules
from provisioning.plans import hook, module_for
from provisioning.plans.context import (
    REQUESTER,
    REVIEWER,
    SYSTEM,
    Lookups,
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


@dataclass(frozen=True)
class InventorySlice:
    """The part of an instance's inventory snapshot a validation looks up (inventory_slice)."""

    refreshed_at: datetime | None
    snapshot: dict


def lookups_for(request_type: str, payload: Any) -> Lookups | None:
    """The names a validation of `payload` looks up (the plan's `lookups` hook); None: the plan
    does not say, so its context holds everything."""
    try:
        wanted = hook(module_for(request_type), "lookups")
    except (ValueError, ImportError):
        return None
    return wanted(payload) if wanted is not None else None


@functools.cache
def _slice_sql() -> str:
    """The inventory's refreshed_at and, of its snapshot, only the roles, databases and schemas
    asked for (text arrays: %s three times, then the instance id), in the snapshot's own shape;
    jsonb operators in the server, so the document never crosses the wire or reaches json.loads."""
    return sql.SQL(
        "SELECT refreshed_at, jsonb_build_object("
        "'roles', COALESCE((SELECT jsonb_object_agg(r, snapshot->'roles'->r) FROM unnest(%s::text[]) r"
        " WHERE snapshot->'roles' ? r), '{{}}'::jsonb),"
        " 'databases', COALESCE((SELECT jsonb_object_agg(d, jsonb_build_object('schemas', COALESCE(("
        "SELECT jsonb_object_agg(s, snapshot->'databases'->d->'schemas'->s) FROM unnest(%s::text[]) s"
        " WHERE snapshot->'databases'->d->'schemas' ? s), '{{}}'::jsonb)))"
        " FROM unnest(%s::text[]) d WHERE snapshot->'databases' ? d), '{{}}'::jsonb))"
        " FROM {table} WHERE instance_id = %s"
    ).format(table=sql.Identifier(InstanceInventory._meta.db_table)).as_string(None)


def inventory_slice(instance: Instance, lookups: Lookups) -> InventorySlice | None:
    """The instance's inventory reduced to the names `lookups` gives (None: it has none). One
    indexed read whatever the size of the instance."""
    with connection.cursor() as cursor:
        cursor.execute(_slice_sql(), [sorted(lookups.roles), sorted(lookups.schemas), sorted(lookups.databases),
                                      instance.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    refreshed_at, snapshot = row
    # Django has psycopg hand jsonb over as text (JSONField decodes it); a few names' worth here.
    return InventorySlice(refreshed_at=refreshed_at, snapshot=json.loads(snapshot) if isinstance(snapshot, str) else snapshot)


def plan_context_for(instance: Instance, team: Any, user: Any, *, request_type: str | None = None,
                     inventory: Any = _UNREAD, lookups: Lookups | None = None) -> PlanContext:
    """The context of a request of `request_type` by `user` for `team` on `instance`.

    request_type None: everything (one query per kind of fact). `inventory`: the instance's
    InstanceInventory row when the caller has just read or refreshed it (None: it has none), so
    it is not read twice. `user` None: a system request (expiry, drift), which may revoke anything.
    `lookups`: only the names a validation looks up (lookups_for; the request's own role(s) and
    schema, by their unique indexes, and that part of the inventory: inventory_slice); None: the
    instance's managed roles and schemas all, one query each, and the whole inventory.
    """
    needs = _NEEDS.get(request_type or "", _EVERYTHING)
    snapshot = None
    if "inventory" in needs:
        if inventory is _UNREAD:
            inventory = InstanceInventory.objects.filter(instance=instance).first() if lookups is None \
                else inventory_slice(instance, lookups)
        if inventory is not None and inventory.refreshed_at is not None:
            snapshot = inventory.snapshot
    roles: dict[str, ManagedRoleFact] = {}
    if "roles" in needs and (lookups is None or lookups.roles):
        role_rows = ManagedRole.objects.filter(instance=instance)
        if lookups is not None:
            role_rows = role_rows.filter(name__in=sorted(lookups.roles))
        roles = {name: ManagedRoleFact(name=name, team_id=team_id, login=login, dropped=dropped_at is not None,
                                       request_id=request_id)
                 for name, team_id, login, dropped_at, request_id in role_rows
                 .order_by("pk").values_list("name", "team_id", "login", "dropped_at", "request_id")}
    schemas: dict[tuple[str, str], ManagedSchemaFact] = {}
    if "schemas" in needs and (lookups is None or (lookups.schemas and lookups.databases)):
        schema_rows = ManagedSchema.objects.filter(instance=instance)
        if lookups is not None:
            schema_rows = schema_rows.filter(Q(database__in=sorted(lookups.databases)) & Q(name__in=sorted(lookups.schemas)))
        schemas = {(database, name): ManagedSchemaFact(database=database, name=name, owner_role=owner,
                                                       team_id=team_id)
                   for database, name, owner, team_id in schema_rows
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
        only=lookups,
    )
