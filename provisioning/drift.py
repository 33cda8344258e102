"""Drift: what the clusters hold versus what the portal granted.

Per instance, one catalog read (provisioning/catalog.py: roles with attributes and memberships
once, then one aclexplode query over schema ACLs, table ACLs and pg_default_acl per database)
is compared with the portal's records (ManagedRole, ManagedSchema, active Grant rows):

- unexpected_privilege: a privilege held by a role the portal manages, or by anyone on an object
  in a schema the portal manages, that no active grant explains (a GRANT made by hand);
  a membership of a managed role the portal did not give;
- missing_privilege: a privilege an active grant gave that the cluster no longer shows;
- dangerous_attribute: SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS on a managed role.

Findings are DriftFinding rows, kept across scans: a finding seen again stays as it is (open or
acknowledged), one no longer seen is resolved. New and resolved findings are audited.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from django.db import transaction
from django.utils import timezone

from audit.services import record
from portal.choices import TABLE_PRIVILEGES, DriftKind, DriftStatus
from portal.errors import TargetUnavailable
from portal.models import Grant, Instance, ManagedRole, ManagedSchema
from provisioning import catalog
from provisioning.connections import describe_error
from provisioning.models import DriftFinding

log = structlog.get_logger(__name__)

DANGEROUS_ATTRIBUTES = ("superuser", "createrole", "createdb", "replication", "bypassrls")
PORTAL_SCHEMAS = {"dbportal_meta"}


@dataclass(frozen=True)
class Key:
    """What identifies a finding across scans."""

    database: str
    kind: str
    role: str
    object_type: str
    object_name: str
    privilege: str


class GrantRow(NamedTuple):
    """An active grant, as the comparison reads it (a row of values: a scan reads thousands, and
    building a model object per row was most of a scan's time, bench/scale.py)."""

    database: str
    schema: str
    role: str
    privileges: list[str]
    tables: list[str] | str | None  # "all" or table names
    default_privileges: bool


def active_grants(instance: Instance) -> list[GrantRow]:
    return [GrantRow(*row) for row in Grant.objects.filter(instance=instance, revoked_at__isnull=True).values_list(
        "database", "schema", "role", "privileges", "tables", "default_privileges")]


def expected_privileges(instance: Instance, observed: list[catalog.Privilege]) -> tuple[set[tuple], list[GrantRow]]:
    """(database, object_type, schema, object, role, privilege) tuples the active grants give."""
    grants = active_grants(instance)
    owners = dict(((database, name), owner) for database, name, owner in
                  ManagedSchema.objects.filter(instance=instance).values_list("database", "name", "owner_role"))
    tables_in: dict[tuple[str, str], set[str]] | None = None  # (database, schema) -> tables, built once
    expected: set[tuple] = set()
    for grant in grants:
        privileges = set(grant.privileges)
        table_privileges = privileges & TABLE_PRIVILEGES
        if table_privileges:
            privileges.add("USAGE")  # a grant of table privileges gives USAGE on the schema too
        for privilege in privileges - TABLE_PRIVILEGES:
            expected.add((grant.database, "schema", grant.schema, None, grant.role, privilege))
        if not table_privileges:
            continue
        if grant.tables == "all":
            # ON ALL TABLES covers the tables of that moment; later tables only through default
            # privileges, so only then is every table of today expected.
            tables: set[str] = set()
            if grant.default_privileges:
                if tables_in is None:
                    tables_in = _tables_by_schema(observed)
                tables = tables_in.get((grant.database, grant.schema), set())
        else:
            tables = set(grant.tables or [])
        for table in tables:
            for privilege in table_privileges:
                expected.add((grant.database, "table", grant.schema, table, grant.role, privilege))
        owner = owners.get((grant.database, grant.schema))
        if grant.default_privileges and owner:
            for privilege in table_privileges:
                expected.add((grant.database, "default", grant.schema, "r", grant.role, privilege))
    return expected, grants


def _tables_by_schema(privileges: list[catalog.Privilege]) -> dict[tuple[str, str], set[str]]:
    tables: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in privileges:
        if p.object_type == "table" and p.object:
            tables[(p.database, p.schema)].add(p.object)
    return tables


def _explained(p: catalog.Privilege, grants: list[GrantRow]) -> bool:
    """A table privilege on a table created after an ON ALL TABLES grant is still explained by it.

    `grants`: the active grants of p's (database, schema, grantee) only."""
    for grant in grants:
        if p.object_type == "schema" and (p.privilege in grant.privileges
                                          or (p.privilege == "USAGE" and set(grant.privileges) & TABLE_PRIVILEGES)):
            return True
        if p.object_type == "table" and p.privilege in grant.privileges and (
            grant.tables == "all" or p.object in (grant.tables or [])
        ):
            return True
        if p.object_type == "default" and grant.default_privileges and p.privilege in grant.privileges:
            return True
    return False


def _object_name(object_type: str, schema: str, obj: str | None) -> str:
    if object_type == "schema":
        return schema
    if object_type == "default":
        return f"{schema or '(all schemas)'} (future tables)" if obj == "r" else f"{schema} (future {obj})"
    return f"{schema}.{obj}"


def compute_findings(instance: Instance, roles: dict[str, catalog.RoleInfo],
                     privileges: list[catalog.Privilege]) -> dict[Key, str]:
    """The drift of one instance as {Key: detail}. Pure: no writes, no connections."""
    # name -> the memberships the portal gave
    managed: dict[str, list[str]] = dict(
        ManagedRole.objects.filter(instance=instance, dropped_at__isnull=True).values_list("name", "member_of"))
    managed_schemas = set(ManagedSchema.objects.filter(instance=instance).values_list("database", "name"))
    expected, grants = expected_privileges(instance, privileges)
    grants_on: dict[tuple[str, str, str], list[GrantRow]] = defaultdict(list)  # (database, schema, role)
    for grant in grants:
        grants_on[(grant.database, grant.schema, grant.role)].append(grant)
    # A schema the portal grants on is in scope too: a hand-made grant next to a portal grant is
    # drift (the entitlements page applies the same scope, #19).
    managed_schemas |= {(g.database, g.schema) for g in grants}
    superusers = {name for name, info in roles.items() if info.superuser and name not in managed}
    ignored_grantees = superusers | {instance.admin_user}
    found: dict[Key, str] = {}

    observed: set[tuple] = set()
    for p in privileges:
        if p.schema in PORTAL_SCHEMAS or p.by_owner or p.grantee in ignored_grantees:
            continue
        in_scope = p.grantee in managed or (p.database, p.schema) in managed_schemas
        if not in_scope:
            continue
        obj = p.object if p.object_type != "schema" else None
        observed.add((p.database, p.object_type, p.schema, obj, p.grantee, p.privilege))
        if (p.database, p.object_type, p.schema, obj, p.grantee, p.privilege) in expected or _explained(
                p, grants_on.get((p.database, p.schema, p.grantee), [])):
            continue
        name = _object_name(p.object_type, p.schema, p.object)
        found[Key(p.database, DriftKind.UNEXPECTED, p.grantee, p.object_type, name, p.privilege)] = (
            f"{p.grantee} holds {p.privilege} on {p.object_type} {name}"
            f"{f' (granted by {p.grantor})' if p.grantor else ''}; no active portal grant gives it")

    for database, object_type, schema, obj, role, privilege in expected - observed:
        if role not in roles:
            detail = f"role {role} no longer exists on the cluster"
        else:
            detail = f"the portal granted {privilege} on {object_type} {_object_name(object_type, schema, obj)} " \
                     f"to {role}; the cluster does not show it"
        found[Key(database, DriftKind.MISSING, role, object_type, _object_name(object_type, schema, obj),
                  privilege)] = detail

    for name, member_of in managed.items():
        info = roles.get(name)
        if info is None:
            continue
        for attribute in DANGEROUS_ATTRIBUTES:
            if getattr(info, attribute):
                found[Key("", DriftKind.DANGEROUS, name, "role", name, attribute.upper())] = (
                    f"{name} has {attribute.upper()}; the portal never gives it")
        allowed = set(member_of or [])
        for group in info.member_of:
            if group not in allowed:
                found[Key("", DriftKind.UNEXPECTED, name, "role", group, "MEMBER")] = (
                    f"{name} is a member of {group}; the portal did not make it one")
    return found


def drift_scan(instance: Instance) -> dict[str, int]:
    """Read the instance, store the findings; returns counts. Raises TargetUnavailable."""
    try:
        roles, privileges = catalog.snapshot(instance)
    except Exception as exc:
        raise TargetUnavailable(f"{instance.name}: {describe_error(exc)}") from exc
    found = compute_findings(instance, roles, privileges)
    now = timezone.now()
    new = resolved = 0
    with transaction.atomic():
        current = {
            Key(f.database, f.kind, f.role, f.object_type, f.object_name, f.privilege): f
            for f in DriftFinding.objects.select_for_update().filter(
                instance=instance, status__in=[DriftStatus.OPEN, DriftStatus.ACKNOWLEDGED])
        }
        for key, detail in found.items():
            finding = current.get(key)
            if finding is not None:
                finding.detail = detail
                finding.save(update_fields=["detail", "last_seen_at"])
                continue
            finding = DriftFinding.objects.create(instance=instance, database=key.database, kind=key.kind,
                                                  role=key.role, object_type=key.object_type,
                                                  object_name=key.object_name, privilege=key.privilege, detail=detail)
            record("drift.detected", object_type="drift", object_id=finding.pk, instance=instance,
                   database=key.database, outcome=key.kind,
                   details={"role": key.role, "object": key.object_name, "privilege": key.privilege,
                            "detail": detail})
            new += 1
        for key, finding in current.items():
            if key not in found:
                finding.status = DriftStatus.RESOLVED
                finding.resolved_at = now
                finding.save(update_fields=["status", "resolved_at", "last_seen_at"])
                record("drift.resolved", object_type="drift", object_id=finding.pk, instance=instance,
                       database=finding.database, outcome="resolved")
                resolved += 1
    log.info("drift.scanned", instance=instance.pk, findings=len(found), new=new, resolved=resolved)
    return {"findings": len(found), "new": new, "resolved": resolved}


def _scanned():
    return Instance.objects.exclude(status="retired").filter(replica_of__isnull=True)


def scanned_instance_ids() -> list[int]:
    """The instances a drift scan covers (primaries; replicas mirror theirs), for the beat job's fan-out."""
    return list(_scanned().order_by("name").values_list("pk", flat=True))


def drift_scan_all(*, instance: Instance | None = None) -> dict[str, Any]:
    """The beat job and "scan now": one instance, or every instance the portal manages (replicas
    mirror their primary). An unreachable instance is reported in the result, not raised."""
    results: dict[str, Any] = {}
    instances = [instance] if instance is not None else _scanned().order_by("name")
    for instance in instances:
        try:
            results[instance.name] = drift_scan(instance)
        except TargetUnavailable as exc:
            results[instance.name] = {"error": exc.detail}
    return results
