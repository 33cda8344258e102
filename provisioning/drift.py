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

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from audit.services import batched, record
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
    privileges: tuple[str, ...]
    tables: tuple[str, ...] | str | None  # "all" or table names
    default_privileges: bool


# The portal's side of the comparison, read with a raw cursor: Django's JSONField ran a
# json.loads and its converters for every row (a third of a scan's Python time at 5,000 grants,
# bench/scale.py), while the jsonb values repeat (["SELECT"], [], ["t"]): each distinct text is
# decoded once per scan, to a tuple (shared between rows, so never mutated).
def _grants_sql() -> str:
    return sql.SQL(
        "SELECT database, schema, role, privileges, tables, default_privileges FROM {table}"
        " WHERE instance_id = %s AND revoked_at IS NULL"
    ).format(table=sql.Identifier(Grant._meta.db_table)).as_string(None)


def _managed_roles_sql() -> str:
    return sql.SQL("SELECT name, member_of FROM {table} WHERE instance_id = %s AND dropped_at IS NULL").format(
        table=sql.Identifier(ManagedRole._meta.db_table)).as_string(None)


def _managed_schemas_sql() -> str:
    return sql.SQL("SELECT database, name, owner_role FROM {table} WHERE instance_id = %s").format(
        table=sql.Identifier(ManagedSchema._meta.db_table)).as_string(None)


def _rows(statement: str, instance: Instance) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, [instance.pk])
        return cursor.fetchall()


class _JsonValues(dict):
    """jsonb text -> its value, lists as tuples; each distinct text decoded once."""

    def __missing__(self, text: str | None) -> Any:
        if text is None:
            return None
        value = json.loads(text)  # Django has psycopg hand jsonb over as text
        value = tuple(value) if isinstance(value, list) else value
        self[text] = value
        return value


def active_grants(instance: Instance, values: _JsonValues | None = None) -> list[GrantRow]:
    values = _JsonValues() if values is None else values
    return [GrantRow(database, schema, role, values[privileges] or (), values[tables], default_privileges)
            for database, schema, role, privileges, tables, default_privileges in _rows(_grants_sql(), instance)]


def _managed_roles(instance: Instance, values: _JsonValues) -> dict[str, tuple[str, ...] | None]:
    """name -> the memberships the portal gave."""
    return {name: values[member_of] for name, member_of in _rows(_managed_roles_sql(), instance)}


def _schema_owners(instance: Instance) -> dict[tuple[str, str], str]:
    """(database, schema) -> owner_role of the schemas the portal manages."""
    return {(database, name): owner for database, name, owner in _rows(_managed_schemas_sql(), instance)}


def expected_privileges(instance: Instance, observed: list[catalog.Privilege]) -> tuple[set[tuple], list[GrantRow]]:
    """(database, object_type, schema, object, role, privilege) tuples the active grants give."""
    grants = active_grants(instance)
    return _expected(grants, _schema_owners(instance), observed), grants


def _expected(grants: list[GrantRow], owners: dict[tuple[str, str], str],
              observed: list[catalog.Privilege]) -> set[tuple]:
    tables_in: dict[tuple[str, str], set[str]] | None = None  # (database, schema) -> tables, built once
    # Grants repeat a handful of privilege lists: split each list once.
    split: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    expected: set[tuple] = set()
    add = expected.add
    for grant in grants:
        listed = tuple(grant.privileges)
        parts = split.get(listed)
        if parts is None:
            privileges = set(listed)
            table_privileges = privileges & TABLE_PRIVILEGES
            if table_privileges:
                privileges.add("USAGE")  # a grant of table privileges gives USAGE on the schema too
            parts = split[listed] = (tuple(privileges - TABLE_PRIVILEGES), tuple(table_privileges))
        schema_privileges, table_privileges = parts
        database, schema, role = grant.database, grant.schema, grant.role
        for privilege in schema_privileges:
            add((database, "schema", schema, None, role, privilege))
        if not table_privileges:
            continue
        if grant.tables == "all":
            # ON ALL TABLES covers the tables of that moment; later tables only through default
            # privileges, so only then is every table of today expected.
            tables: Iterable[str] = ()
            if grant.default_privileges:
                if tables_in is None:
                    tables_in = _tables_by_schema(observed)
                tables = tables_in.get((database, schema), set())
        else:
            tables = grant.tables or ()  # a set of tuples: a table listed twice is added once anyway
        for table in tables:
            for privilege in table_privileges:
                add((database, "table", schema, table, role, privilege))
        if grant.default_privileges and owners.get((database, schema)):
            for privilege in table_privileges:
                add((database, "default", schema, "r", role, privilege))
    return expected


def _tables_by_schema(privileges: list[catalog.Privilege]) -> dict[tuple[str, str], set[str]]:
    tables: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in privileges:
        if p.object_type == "table" and p.object:
            tables[(p.database, p.schema)].add(p.object)
    return tables


def _explained(object_type: str, obj: str | None, privilege: str, grants: list[GrantRow]) -> bool:
    """A table privilege on a table created after an ON ALL TABLES grant is still explained by it.

    `grants`: the active grants of the privilege's (database, schema, grantee) only."""
    for grant in grants:
        if object_type == "schema" and (privilege in grant.privileges
                                        or (privilege == "USAGE" and set(grant.privileges) & TABLE_PRIVILEGES)):
            return True
        if object_type == "table" and privilege in grant.privileges and (
            grant.tables == "all" or obj in (grant.tables or [])
        ):
            return True
        if object_type == "default" and grant.default_privileges and privilege in grant.privileges:
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
    """The drift of one instance as {Key: detail}. Pure: no writes, no connections.

    The loop over the catalog's rows is the part that grows with the cluster (two or more rows
    per role): each row is unpacked once and costs a few set lookups unless it is drift."""
    values = _JsonValues()
    managed = _managed_roles(instance, values)
    owners = _schema_owners(instance)
    grants = active_grants(instance, values)
    expected = _expected(grants, owners, privileges)
    grants_on: dict[tuple[str, str, str], list[GrantRow]] = defaultdict(list)  # (database, schema, role)
    for grant in grants:
        grants_on[(grant.database, grant.schema, grant.role)].append(grant)
    # A schema the portal grants on is in scope too: a hand-made grant next to a portal grant is
    # drift (the entitlements page applies the same scope, #19).
    managed_schemas = set(owners) | {(g.database, g.schema) for g in grants}
    superusers = {name for name, info in roles.items() if info.superuser and name not in managed}
    ignored_grantees = superusers | {instance.admin_user}
    found: dict[Key, str] = {}

    observed: set[tuple] = set()
    for database, object_type, schema, obj, grantee, grantor, owner, privilege, _grantable in privileges:
        if grantee in ignored_grantees or schema in PORTAL_SCHEMAS or (
                grantee == owner and object_type != "default"):  # Privilege.by_owner
            continue
        if grantee not in managed and (database, schema) not in managed_schemas:
            continue  # out of scope
        key = (database, object_type, schema, obj if object_type != "schema" else None, grantee, privilege)
        observed.add(key)
        if key in expected or _explained(object_type, obj, privilege, grants_on.get((database, schema, grantee), [])):
            continue
        name = _object_name(object_type, schema, obj)
        found[Key(database, DriftKind.UNEXPECTED, grantee, object_type, name, privilege)] = (
            f"{grantee} holds {privilege} on {object_type} {name}"
            f"{f' (granted by {grantor})' if grantor else ''}; no active portal grant gives it")

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
        if info.superuser or info.createrole or info.createdb or info.replication or info.bypassrls:
            for attribute in DANGEROUS_ATTRIBUTES:
                if getattr(info, attribute):
                    found[Key("", DriftKind.DANGEROUS, name, "role", name, attribute.upper())] = (
                        f"{name} has {attribute.upper()}; the portal never gives it")
        if not info.member_of:
            continue
        allowed = set(member_of or [])
        for group in info.member_of:
            if group not in allowed:
                found[Key("", DriftKind.UNEXPECTED, name, "role", group, "MEMBER")] = (
                    f"{name} is a member of {group}; the portal did not make it one")
    return found


def _finding_updates() -> tuple[str, str, str]:
    """UPDATEs of findings by id: (seen again, seen with another detail, resolved)."""
    table = sql.Identifier(DriftFinding._meta.db_table)
    return tuple(statement.format(table=table).as_string(None) for statement in (  # type: ignore[return-value]
        sql.SQL("UPDATE {table} SET last_seen_at = %s WHERE id = ANY(%s)"),
        sql.SQL("UPDATE {table} SET detail = %s, last_seen_at = %s WHERE id = %s"),
        sql.SQL("UPDATE {table} SET status = %s, resolved_at = %s, last_seen_at = %s WHERE id = ANY(%s)")))


def store_findings(instance: Instance, found: dict[Key, str]) -> tuple[int, int]:
    """Store one scan's findings; returns (new, resolved).

    Set-based: a finding seen again with the same detail (nearly all of them, scan after scan)
    only has its last_seen_at moved, by one UPDATE for all of them; new findings are one INSERT,
    resolved ones one UPDATE, and their audit events one append (audit.services.batched). Row by
    row, a cluster with thousands of open findings cost thousands of round trips every scan."""
    now = timezone.now()
    with transaction.atomic(), batched():
        current: dict[Key, tuple[int, str]] = {
            Key(*row[1:7]): (row[0], row[7])
            for row in DriftFinding.objects.select_for_update().filter(
                instance=instance, status__in=[DriftStatus.OPEN, DriftStatus.ACKNOWLEDGED]).values_list(
                "pk", "database", "kind", "role", "object_type", "object_name", "privilege", "detail")
        }
        seen: list[int] = []
        new: list[DriftFinding] = []
        update_seen, update_detail, update_resolved = _finding_updates()
        with connection.cursor() as cursor:
            for key, detail in found.items():
                hit = current.get(key)
                if hit is None:
                    new.append(DriftFinding(instance=instance, database=key.database, kind=key.kind, role=key.role,
                                            object_type=key.object_type, object_name=key.object_name,
                                            privilege=key.privilege, detail=detail))
                elif hit[1] == detail:
                    seen.append(hit[0])
                else:  # the same drift described differently (say, another grantor): rare
                    cursor.execute(update_detail, [detail, now, hit[0]])
            if seen:
                cursor.execute(update_seen, [now, seen])
            gone = [(pk, key) for key, (pk, _detail) in current.items() if key not in found]
            if gone:
                cursor.execute(update_resolved, [DriftStatus.RESOLVED.value, now, now, [pk for pk, _key in gone]])
        for finding in DriftFinding.objects.bulk_create(new):
            record("drift.detected", object_type="drift", object_id=finding.pk, instance=instance,
                   database=finding.database, outcome=finding.kind,
                   details={"role": finding.role, "object": finding.object_name, "privilege": finding.privilege,
                            "detail": finding.detail})
        for pk, key in gone:
            record("drift.resolved", object_type="drift", object_id=pk, instance=instance,
                   database=key.database, outcome="resolved")
    return len(new), len(gone)


def drift_scan(instance: Instance) -> dict[str, int]:
    """Read the instance, store the findings; returns counts. Raises TargetUnavailable."""
    try:
        roles, privileges = catalog.snapshot(instance)
    except Exception as exc:
        raise TargetUnavailable(f"{instance.name}: {describe_error(exc)}") from exc
    found = compute_findings(instance, roles, privileges)
    new, resolved = store_findings(instance, found)
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
