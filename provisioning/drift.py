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

from dataclasses import dataclass
from typing import Any

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


def _tables_of(privileges: list[catalog.Privilege], database: str, schema: str) -> set[str]:
    return {p.object for p in privileges
            if p.database == database and p.schema == schema and p.object_type == "table" and p.object}


def expected_privileges(instance: Instance, observed: list[catalog.Privilege]) -> tuple[set[tuple], list[Grant]]:
    """(database, object_type, schema, object, role, privilege) tuples the active grants give."""
    grants = list(Grant.objects.filter(instance=instance, revoked_at__isnull=True))
    owners = {(s.database, s.name): s.owner_role for s in ManagedSchema.objects.filter(instance=instance)}
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
            tables = _tables_of(observed, grant.database, grant.schema) if grant.default_privileges else set()
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


def _explained(p: catalog.Privilege, grants: list[Grant]) -> bool:
    """A table privilege on a table created after an ON ALL TABLES grant is still explained by it."""
    for grant in grants:
        if (grant.database, grant.schema, grant.role) != (p.database, p.schema, p.grantee):
            continue
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
    managed = {r.name: r for r in ManagedRole.objects.filter(instance=instance, dropped_at__isnull=True)}
    managed_schemas = {(s.database, s.name) for s in ManagedSchema.objects.filter(instance=instance)}
    expected, grants = expected_privileges(instance, privileges)
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
        if (p.database, p.object_type, p.schema, obj, p.grantee, p.privilege) in expected or _explained(p, grants):
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

    for name, record_ in managed.items():
        info = roles.get(name)
        if info is None:
            continue
        for attribute in DANGEROUS_ATTRIBUTES:
            if getattr(info, attribute):
                found[Key("", DriftKind.DANGEROUS, name, "role", name, attribute.upper())] = (
                    f"{name} has {attribute.upper()}; the portal never gives it")
        allowed = set(record_.member_of or [])
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
