"""Access as code: a team's desired state on one instance, read, checked and compared with what the
team holds (the portal's record of live schemas, roles and grants) and what it has already asked
for (open requests). The difference is the list of requests a `dbportal apply` files.

The document (YAML or JSON; docs/access-as-code.md):

    version: 1
    instance: dev-pg            # by name
    team: payments              # one of the caller's teams
    schemas:  [{database: app, name: payments}]
    roles:    [{name: payments_app, login: true, member_of: [payments_owner]}]
    grants:   [{role: payments_app, database: app, schema: payments,
                privileges: [SELECT, INSERT], tables: all, default_privileges: false,
                expires_at: "2027-01-01T00:00:00Z"}]

What it changes, and what it leaves alone (said in the plan, never done silently):
- a schema or role declared and not held (nor asked for) is filed as a `schema` / `role` request;
- a grant key (role, database, schema, tables, default_privileges) gets a `grant` request for the
  privileges declared and not held (once its role and schema are live: a grant's plan checks
  them, so a grant on a role or schema the same apply asks for waits for the next apply), and a `revoke` request for those held and not declared;
  a key held and not declared at all is revoked whole;
- schemas and roles held but not declared, and declared roles whose attributes differ, are
  reported and left alone: the portal has no request that drops a schema or alters a role.
Open requests count as done (a second apply before the first is applied files nothing), and the
requests are validated by their plans when filed, so the document never bypasses a rule.

Pure reading: nothing here writes (portal/services/change_sets.py files the requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from portal.choices import OPEN_STATUSES, RequestType
from portal.errors import InvalidPayload
from portal.models import ChangeRequest, Grant, Instance, ManagedRole, ManagedSchema, Team

VERSION = 1
MAX_ITEMS = 500
TOP_KEYS = {"version", "instance", "team", "schemas", "roles", "grants", "justification"}
SCHEMA_KEYS = ({"database", "name"}, {"owner_role"})
ROLE_KEYS = ({"name"}, {"login", "member_of", "connection_limit", "valid_until"})
GRANT_KEYS = ({"role", "database", "schema", "privileges"}, {"tables", "default_privileges", "expires_at"})
ALL_TABLES = "all"


@dataclass
class Change:
    """One request the apply would file (`op` add or remove), or a note on what it leaves alone."""

    op: str  # "add" | "remove" file a request; "keep" (left alone, or already asked for); "wait" (next apply)
    type: str  # request type, or "schema" / "role" for a note
    payload: dict[str, Any]
    reason: str
    pending_request: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "type": self.type, "payload": self.payload, "reason": self.reason,
                "pending_request": self.pending_request}


@dataclass
class Desired:
    instance: Instance
    team: Team
    schemas: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    grants: list[dict[str, Any]] = field(default_factory=list)
    justification: str = ""


class _Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, []).append(message)

    def raise_if_any(self) -> None:
        if self.by_field:
            first = next(iter(self.by_field))
            raise InvalidPayload(f"{first}: {self.by_field[first][0]}", errors=self.by_field)


def _team_for(user: Any, value: Any) -> Team | None:
    teams = Team.objects.filter(memberships__user=user)
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return teams.filter(pk=int(value)).first()
    return teams.filter(name=value).first() if isinstance(value, str) else None


def _instance_for(user: Any, value: Any) -> Instance | None:
    instances = Instance.objects.restrict(user, "view")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return instances.filter(pk=int(value)).first()
    return instances.filter(name=value).first() if isinstance(value, str) else None


def _items(errors: _Errors, document: dict, key: str, keys: tuple[set[str], set[str]]) -> list[dict]:
    value = document.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(key, "a list")
        return []
    if len(value) > MAX_ITEMS:
        errors.add(key, f"at most {MAX_ITEMS} entries")
        return []
    required, optional = keys
    items = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            errors.add(where, "an object")
            continue
        for missing in sorted(required - item.keys()):
            errors.add(f"{where}.{missing}", "this field is required")
        for unknown in sorted(set(item) - required - optional, key=str):
            errors.add(f"{where}.{unknown}", "unknown field")
        items.append(item)
    return items


def _tables_key(tables: Any) -> Any:
    if tables in (None, ALL_TABLES):
        return ALL_TABLES
    if isinstance(tables, list) and all(isinstance(t, str) for t in tables):
        return tuple(sorted(tables))
    return None


def _privileges(value: Any) -> frozenset[str] | None:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        return None
    return frozenset(p.strip().upper() for p in value)


def parse(user: Any, document: Any) -> Desired:
    """The document checked for shape (each entry's content is checked by its request's plan when
    filed); 400 naming the field (`grants[2].privileges`) otherwise."""
    errors = _Errors()
    if not isinstance(document, dict):
        raise InvalidPayload.field("document", "an object with version, instance, team, schemas, roles, grants")
    for unknown in sorted(set(document) - TOP_KEYS, key=str):
        errors.add(unknown, "unknown field")
    if document.get("version", VERSION) != VERSION:
        errors.add("version", f"only version {VERSION} is understood")
    team = _team_for(user, document.get("team"))
    if team is None:
        errors.add("team", "one of your teams, by name or id")
    instance = _instance_for(user, document.get("instance"))
    if instance is None:
        errors.add("instance", "an instance you can see, by name or id")
    schemas = _items(errors, document, "schemas", SCHEMA_KEYS)
    roles = _items(errors, document, "roles", ROLE_KEYS)
    grants = _items(errors, document, "grants", GRANT_KEYS)
    for index, grant in enumerate(grants):
        if "privileges" in grant and _privileges(grant["privileges"]) is None:
            errors.add(f"grants[{index}].privileges", "a non-empty list of privilege names")
        if _tables_key(grant.get("tables")) is None:
            errors.add(f"grants[{index}].tables", '"all" or a list of table names')
        if not isinstance(grant.get("default_privileges", False), bool):
            errors.add(f"grants[{index}].default_privileges", "true or false")
    seen: dict[tuple, int] = {}
    for index, grant in enumerate(grants):
        key = _grant_key(grant)
        if key in seen:
            errors.add(f"grants[{index}]", f"the same role, schema and tables as grants[{seen[key]}]: merge them")
        seen.setdefault(key, index)
    justification = document.get("justification", "")
    if not isinstance(justification, str):
        errors.add("justification", "a string")
    errors.raise_if_any()
    return Desired(instance=instance, team=team, schemas=schemas, roles=roles, grants=grants,
                   justification=justification)


def _grant_key(grant: dict) -> tuple:
    return (grant.get("role"), grant.get("database"), grant.get("schema"), _tables_key(grant.get("tables")),
            bool(grant.get("default_privileges", False)))


def _grant_payload(key: tuple, privileges: frozenset[str], expires_at: Any = None) -> dict[str, Any]:
    role, database, schema, tables, default_privileges = key
    payload = {"role": role, "database": database, "schema": schema, "privileges": sorted(privileges),
               "tables": tables if tables == ALL_TABLES else list(tables), "default_privileges": default_privileges}
    if expires_at:
        payload["expires_at"] = expires_at
    return payload


def live_state_for(user: Any, *, team: Any = None, instance: Any = None) -> dict[str, Any]:
    """What the caller's teams hold (or one team's, on one instance): schemas, roles and live grants."""
    teams = Team.objects.filter(memberships__user=user)
    if team not in (None, ""):
        chosen = _team_for(user, team)
        if chosen is None:
            raise InvalidPayload.field("team", "one of your teams, by name or id")
        teams = teams.filter(pk=chosen.pk)
    where = Q(team__in=teams)
    if instance not in (None, ""):
        chosen_instance = _instance_for(user, instance)
        if chosen_instance is None:
            raise InvalidPayload.field("instance", "an instance you can see, by name or id")
        where &= Q(instance=chosen_instance)
    schemas = ManagedSchema.objects.filter(where).select_related("instance", "team").order_by(
        "instance__name", "database", "name")
    roles = ManagedRole.objects.filter(where, dropped_at__isnull=True).select_related("instance", "team").order_by(
        "instance__name", "name")
    grants = Grant.objects.filter(where, revoked_at__isnull=True).select_related("instance", "team").order_by(
        "instance__name", "database", "schema", "role", "id")
    return {
        "teams": sorted(teams.values_list("name", flat=True)),
        "schemas": [{"instance": s.instance.name, "team": s.team.name, "database": s.database, "name": s.name,
                     "owner_role": s.owner_role, "request_id": s.request_id} for s in schemas],
        "roles": [{"instance": r.instance.name, "team": r.team.name, "name": r.name, "login": r.login,
                   "member_of": list(r.member_of or []), "request_id": r.request_id} for r in roles],
        "grants": [{"instance": g.instance.name, "team": g.team.name, "role": g.role, "database": g.database,
                    "schema": g.schema, "privileges": list(g.privileges), "tables": g.tables,
                    "default_privileges": g.default_privileges, "expires_at": g.expires_at,
                    "request_id": g.request_id} for g in grants],
    }


def _open_requests(desired: Desired) -> list[ChangeRequest]:
    return list(ChangeRequest.objects.filter(
        team=desired.team, instance=desired.instance, status__in=OPEN_STATUSES,
        type__in=(RequestType.SCHEMA, RequestType.ROLE, RequestType.GRANT, RequestType.REVOKE),
    ).only("id", "type", "payload").order_by("id"))


def diff(desired: Desired) -> list[Change]:
    """The requests that bring the team's state to the document, in filing order (schemas, roles,
    grants, then revokes), and notes on what is left alone."""
    live = live_state_for_desired(desired)
    pending = _open_requests(desired)
    changes: list[Change] = []

    pending_schemas = {(r.payload.get("database"), r.payload.get("name")): r.pk for r in pending
                       if r.type == RequestType.SCHEMA}
    held_schemas = {(s.database, s.name) for s in live["schemas"]}
    declared_schemas = set()
    for item in desired.schemas:
        key = (item["database"], item["name"])
        declared_schemas.add(key)
        if key in held_schemas:
            continue
        payload = {k: item[k] for k in ("database", "name", "owner_role") if k in item}
        if key in pending_schemas:
            changes.append(Change("keep", RequestType.SCHEMA, payload, "already requested",
                                  pending_schemas[key]))
        else:
            changes.append(Change("add", RequestType.SCHEMA, payload, "declared, not held"))
    for database, name in sorted(held_schemas - declared_schemas):
        changes.append(Change("keep", "schema", {"database": database, "name": name},
                              "held, not declared: left alone (no request drops a schema)"))

    pending_roles = {r.payload.get("name"): r.pk for r in pending if r.type == RequestType.ROLE}
    held_roles = {r.name: r for r in live["roles"]}
    declared_roles = set()
    for item in desired.roles:
        name = item["name"]
        declared_roles.add(name)
        payload = {"name": name, "login": bool(item.get("login", False)),
                   **{k: item[k] for k in ("member_of", "connection_limit", "valid_until") if k in item}}
        held = held_roles.get(name)
        if held is not None:
            if held.login != payload["login"] or sorted(held.member_of or []) != sorted(item.get("member_of") or []):
                changes.append(Change("keep", "role", payload,
                                      "held with other attributes: left alone (no request alters a role)"))
            continue
        if name in pending_roles:
            changes.append(Change("keep", RequestType.ROLE, payload, "already requested", pending_roles[name]))
        else:
            changes.append(Change("add", RequestType.ROLE, payload, "declared, not held"))
    for name in sorted(set(held_roles) - declared_roles):
        changes.append(Change("keep", "role", {"name": name},
                              "held, not declared: left alone (no request drops a role)"))

    # Grants: privileges per key, held + asked for - asked to revoke.
    effective: dict[tuple, set[str]] = {}
    for grant in live["grants"]:
        effective.setdefault(_grant_key(_as_item(grant)), set()).update(p.upper() for p in grant.privileges)
    pending_by_key: dict[tuple, int] = {}
    for request in pending:
        if request.type not in (RequestType.GRANT, RequestType.REVOKE):
            continue
        key = _grant_key(request.payload)
        privileges = {str(p).upper() for p in request.payload.get("privileges") or []}
        pending_by_key[key] = request.pk
        if request.type == RequestType.GRANT:
            effective.setdefault(key, set()).update(privileges)
        else:
            effective.setdefault(key, set()).difference_update(privileges)
    declared_keys = set()
    revokes: list[Change] = []
    for item in desired.grants:
        key = _grant_key(item)
        declared_keys.add(key)
        wanted = _privileges(item["privileges"]) or frozenset()
        have = effective.get(key, set())
        if wanted - have:
            payload = _grant_payload(key, wanted - have, item.get("expires_at"))
            missing = [what for what, there in (("role", key[0] in held_roles),
                                                ("schema", (key[1], key[2]) in held_schemas)) if not there]
            if missing:
                # A grant's plan needs its role and schema live: it is filed by the apply after theirs.
                changes.append(Change("wait", RequestType.GRANT, payload,
                                      f"needs the {' and '.join(missing)} applied first: apply again then"))
            else:
                changes.append(Change("add", RequestType.GRANT, payload, "declared, not held"))
        if have - wanted:
            revokes.append(Change("remove", RequestType.REVOKE, _grant_payload(key, frozenset(have - wanted)),
                                  "held, not declared"))
    for key in sorted(set(effective) - declared_keys, key=str):
        if effective[key]:
            revokes.append(Change("remove", RequestType.REVOKE, _grant_payload(key, frozenset(effective[key])),
                                  "held, not declared"))
    return changes + revokes


def _as_item(grant: Grant) -> dict[str, Any]:
    return {"role": grant.role, "database": grant.database, "schema": grant.schema, "tables": grant.tables,
            "default_privileges": grant.default_privileges}


def live_state_for_desired(desired: Desired) -> dict[str, list]:
    """The model rows the diff compares with (the team's, on the document's instance)."""
    where = Q(team=desired.team, instance=desired.instance)
    return {
        "schemas": list(ManagedSchema.objects.filter(where)),
        "roles": list(ManagedRole.objects.filter(where, dropped_at__isnull=True)),
        "grants": list(Grant.objects.filter(where, revoked_at__isnull=True).order_by("id")),
    }
