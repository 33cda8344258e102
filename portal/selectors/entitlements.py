"""Who can access what (entitlements): live from the cluster catalogs, or as of a past date from the records.

Live rows come from provisioning.catalog (one query per database) and are joined with the
portal's own records: the Grant that explains a privilege (its request, requester, approvers,
expiry) or the ManagedSchema whose owner it is. A privilege nothing explains is flagged
`unexplained`. As of a past date, rows are rebuilt from the Grant and ManagedSchema rows
(they keep granted_at / revoked_at / expires_at after a grant ends or a role is dropped) and
the drift findings that were open then (privileges granted outside the portal).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from portal.choices import SCHEMA_PRIVILEGES, Decision, DriftKind, InstanceStatus
from portal.models import ChangeRequest, Grant, Instance, ManagedRole, ManagedSchema
from provisioning.catalog import snapshot
from provisioning.connections import describe_error
from provisioning.drift import PORTAL_SCHEMAS
from provisioning.models import DriftFinding

KINDS = ("superuser", "owner", "schema", "tables", "sequences", "default")


@dataclass
class Entitlement:
    instance: str
    database: str
    schema: str
    role: str
    kind: str  # one of KINDS
    privileges: list[str]
    tables: Any = ""  # "all", a list of names, or "" where it does not apply
    source: str = ""  # grant | owner | admin | builtin | outside | drift | ""
    request_id: int | None = None
    request_type: str = ""
    requester: str = ""
    approvers: list[str] = field(default_factory=list)
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    member_of: list[str] = field(default_factory=list)
    unexplained: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sort_key(self) -> tuple:
        return (self.instance, self.database, self.schema, self.role, KINDS.index(self.kind), str(self.tables))


@dataclass
class EntitlementReport:
    mode: str  # live | at
    as_of: datetime
    rows: list[Entitlement]
    unreachable: dict[str, str]


def _approvers_by_request(request_ids: set[int]) -> dict[int, list[str]]:
    """Approvers whose decision counted: approve, on the plan hash that ran."""
    found: dict[int, list[str]] = defaultdict(list)
    if not request_ids:
        return found
    requests = ChangeRequest.objects.filter(pk__in=request_ids).prefetch_related("approvals__reviewer")
    for request in requests:
        for approval in request.approvals.all():
            if approval.decision == Decision.APPROVE and approval.plan_hash == request.plan_hash:
                found[request.pk].append(approval.reviewer.username)
    return found


def _explain(row: Entitlement, request: ChangeRequest | None, approvers: dict[int, list[str]], source: str) -> None:
    row.source = source
    if request is not None:
        row.request_id = request.pk
        row.request_type = request.type
        row.requester = request.requester.username if request.requester_id else "system"
        row.approvers = list(approvers.get(request.pk, []))


def _effective(grant: Grant) -> set[str]:
    """What a grant's plan gives: its privileges, plus USAGE on the schema with any table
    privilege (provisioning/plans/access.py renders that GRANT USAGE too)."""
    privileges = set(grant.privileges)
    if privileges - SCHEMA_PRIVILEGES:
        privileges.add("USAGE")
    return privileges


def _grant_covers(grant: Grant, row: Entitlement) -> bool:
    if grant.database != row.database or grant.schema != row.schema or grant.role != row.role:
        return False
    if not set(row.privileges) <= _effective(grant):
        return False
    if row.kind == "schema":
        return True
    if row.kind == "default":
        return bool(grant.default_privileges)
    if row.kind in ("tables", "sequences"):
        if grant.tables == "all" or grant.tables == ["all"]:
            return True
        return row.tables != "all" and set(row.tables) <= set(grant.tables or [])
    return False


def _group_tables(per_privilege: dict[str, set[str]], all_tables: set[str]) -> list[tuple[list[str], Any]]:
    """{privilege: tables} -> [(privileges, "all" | [tables])], privileges grouped by equal table sets."""
    by_set: dict[frozenset[str], list[str]] = defaultdict(list)
    for privilege, tables in per_privilege.items():
        by_set[frozenset(tables)].append(privilege)
    grouped = []
    for tables, privileges in by_set.items():
        scope: Any = "all" if all_tables and tables >= all_tables else sorted(tables)
        grouped.append((sorted(privileges), scope))
    return grouped


def _live_rows(instance: Instance) -> list[Entitlement]:
    roles, privileges = snapshot(instance)
    admins = {name for name, info in roles.items() if info.superuser} | {instance.admin_user}
    rows: list[Entitlement] = []
    for name in sorted(n for n, info in roles.items() if info.superuser):
        rows.append(Entitlement(instance.name, "*", "*", name, "superuser", ["SUPERUSER"],
                                member_of=list(roles[name].member_of)))

    relations: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # (db, schema, kind) -> every relation
    schema_privs: dict[tuple, set[str]] = defaultdict(set)
    rel_privs: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    default_privs: dict[tuple, set[str]] = defaultdict(set)
    owned: dict[tuple, set[str]] = defaultdict(set)  # (db, schema, role) -> owned objects ("" = the schema)
    for p in privileges:
        if p.object_type in ("table", "sequence"):
            relations[(p.database, p.schema, p.object_type)].add(p.object or "")
        if p.grantee in admins:
            continue  # superusers and the portal's admin role can do everything anyway
        if p.by_owner:
            owned[(p.database, p.schema, p.grantee)].add(p.object or "")
            continue
        key = (p.database, p.schema, p.grantee)
        if p.object_type == "schema":
            schema_privs[key].add(p.privilege)
        elif p.object_type in ("table", "sequence"):
            rel_privs[key + (p.object_type,)][p.privilege].add(p.object or "")
        elif p.object_type == "default":
            default_privs[key].add(p.privilege)

    def member_of(role: str) -> list[str]:
        return list(roles[role].member_of) if role in roles else []

    for (db, schema, role), objects in owned.items():
        tables = "" if objects == {""} else sorted(o for o in objects if o)
        rows.append(Entitlement(instance.name, db, schema, role, "owner", ["OWNER"], tables, member_of=member_of(role)))
    for (db, schema, role), privs in schema_privs.items():
        rows.append(Entitlement(instance.name, db, schema, role, "schema", sorted(privs), member_of=member_of(role)))
    for (db, schema, role, kind), per_privilege in rel_privs.items():
        for privs, scope in _group_tables(per_privilege, relations[(db, schema, kind)]):
            rows.append(Entitlement(instance.name, db, schema, role, kind + "s", privs, scope, member_of=member_of(role)))
    for (db, schema, role), privs in default_privs.items():
        rows.append(Entitlement(instance.name, db, schema, role, "default", sorted(privs), "future tables",
                                member_of=member_of(role)))

    _join_records(instance, rows)
    return rows


BUILTIN_ROLES = {"PUBLIC", "pg_database_owner"}  # PostgreSQL's own grantees, not people's


def _join_records(instance: Instance, rows: list[Entitlement]) -> None:
    """Explain each live row by the portal's records, and flag as `unexplained` exactly what Drift
    reports (#19: one "needs attention" count): a row in Drift's scope (a role the portal manages,
    a schema it manages or grants on; never its own bookkeeping schema) that no record explains. A replica
    mirrors its primary's catalog, so the primary's records explain it. PostgreSQL's built-ins
    (PUBLIC, pg_database_owner, pg_* roles) are labelled `builtin`; what lies outside the portal's
    scope (a schema and role it does not manage, a superuser it did not make) is labelled
    `outside`, as Drift leaves it alone."""
    records = instance.replica_of if instance.replica_of_id else instance
    grants = list(
        Grant.objects.filter(instance=records, revoked_at__isnull=True)
        .select_related("request__requester").order_by("-granted_at")
    )
    schemas = list(ManagedSchema.objects.filter(instance=records).select_related("request__requester"))
    managed_roles = set(ManagedRole.objects.filter(instance=records, dropped_at__isnull=True)
                        .values_list("name", flat=True))
    approvers = _approvers_by_request({g.request_id for g in grants if g.request_id}
                                      | {s.request_id for s in schemas if s.request_id})
    owners = {(s.database, s.name): s for s in schemas}
    admin_users = {instance.admin_user, records.admin_user}

    granted_schemas = {(g.database, g.schema) for g in grants}
    # The grants that can cover a row, by its (database, schema, role), newest first: one lookup a
    # row instead of a pass over every grant (that pass made a live report quadratic in the roles).
    grants_on: dict[tuple[str, str, str], list[Grant]] = defaultdict(list)
    for g in grants:
        grants_on[(g.database, g.schema, g.role)].append(g)

    def in_scope(row: Entitlement) -> bool:  # provisioning.drift.compute_findings's scope
        if row.schema in PORTAL_SCHEMAS:
            return False
        return (row.role in managed_roles or (row.database, row.schema) in owners
                or (row.database, row.schema) in granted_schemas)

    for row in rows:
        if row.role in BUILTIN_ROLES or row.role.startswith("pg_"):
            row.source = "builtin"
            continue
        if row.kind == "superuser":
            if row.role in admin_users:
                row.source = "admin"
            elif row.role in managed_roles:
                row.unexplained = True  # Drift: a dangerous attribute on a managed role
            else:
                row.source = "outside"
            continue
        if row.kind == "owner":
            managed = owners.get((row.database, row.schema))
            if managed is not None and managed.owner_role == row.role:
                _explain(row, managed.request, approvers, "owner")
            else:
                row.source = "outside"  # Drift leaves ownership alone
            continue
        grant = next((g for g in grants_on.get((row.database, row.schema, row.role), ()) if _grant_covers(g, row)),
                     None)
        if grant is not None:
            _explain(row, grant.request, approvers, "grant")
            row.granted_at = grant.granted_at
            row.expires_at = grant.expires_at
        elif in_scope(row):
            row.unexplained = True
        else:
            row.source = "outside"


def _rows_at(instance: Instance, at: datetime) -> list[Entitlement]:
    dropped = {
        r.name for r in ManagedRole.objects.filter(instance=instance, dropped_at__isnull=False, dropped_at__lte=at)
    }
    grants = list(
        Grant.objects.filter(instance=instance, granted_at__lte=at)
        .filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=at))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=at))
        .select_related("request__requester").order_by("granted_at")
    )
    schemas = list(ManagedSchema.objects.filter(instance=instance, created_at__lte=at).select_related("request__requester"))
    approvers = _approvers_by_request({g.request_id for g in grants if g.request_id}
                                      | {s.request_id for s in schemas if s.request_id})
    rows: list[Entitlement] = []
    for schema in schemas:
        row = Entitlement(instance.name, schema.database, schema.name, schema.owner_role, "owner", ["OWNER"])
        _explain(row, schema.request, approvers, "owner")
        row.granted_at = schema.created_at
        rows.append(row)
    for grant in grants:
        if grant.role in dropped:
            continue
        schema_level = sorted(p for p in _effective(grant) if p in SCHEMA_PRIVILEGES)
        table_level = sorted(p for p in grant.privileges if p not in SCHEMA_PRIVILEGES)
        tables: Any = "all" if grant.tables in ("all", ["all"]) else sorted(grant.tables or [])
        parts = []
        if schema_level:
            parts.append(("schema", schema_level, ""))
        if table_level:
            parts.append(("tables", table_level, tables))
            if grant.default_privileges:
                parts.append(("default", table_level, "future tables"))
        for kind, privileges, scope in parts:
            row = Entitlement(instance.name, grant.database, grant.schema, grant.role, kind, privileges, scope)
            _explain(row, grant.request, approvers, "grant")
            row.granted_at, row.expires_at = grant.granted_at, grant.expires_at
            rows.append(row)
    findings = DriftFinding.objects.filter(instance=instance, kind=DriftKind.UNEXPECTED, detected_at__lte=at).filter(
        Q(resolved_at__isnull=True) | Q(resolved_at__gt=at))
    for finding in findings:
        if finding.role in dropped:
            continue
        schema, _, obj = finding.object_name.partition(".")
        kind = {"schema": "schema", "table": "tables", "default": "default"}.get(finding.object_type, "tables")
        row = Entitlement(instance.name, finding.database, schema, finding.role, kind, [finding.privilege],
                          [obj] if kind == "tables" and obj else "", source="drift", unexplained=True)
        row.granted_at = finding.detected_at
        rows.append(row)
    return rows


def entitlements_for(*, instances: list[Instance], at: datetime | None = None, role: str = "",
                     schema: str = "", now: datetime | None = None) -> EntitlementReport:
    """The report for the given instances: live (at=None) or as of `at`."""
    rows: list[Entitlement] = []
    unreachable: dict[str, str] = {}
    for instance in instances:
        if at is None:
            if instance.status == InstanceStatus.RETIRED:
                continue
            try:
                rows.extend(_live_rows(instance))
            except Exception as exc:  # noqa: BLE001 - one unreachable cluster must not hide the others
                unreachable[instance.name] = describe_error(exc)
        else:
            rows.extend(_rows_at(instance, at))
    if role:
        rows = [r for r in rows if r.role == role]
    if schema:
        rows = [r for r in rows if r.schema == schema]
    rows.sort(key=Entitlement.sort_key)
    return EntitlementReport(mode="live" if at is None else "at", as_of=at or now or timezone.now(), rows=rows,
                             unreachable=unreachable)


def instances_for(instance: str = "") -> list[Instance]:
    """The instances the report covers: every one, or the one `instance` names by id or by name,
    like every other filter of the API. Digits are an id first; a name made of digits (a slug may
    be) still finds its instance when no instance has that id, as it did before ids were taken."""
    qs = Instance.objects.order_by("name")
    if not instance:
        return list(qs)
    # isascii: "²".isdigit() is True, yet int("²") raises; ids stop below 2**63 (bigint).
    if instance.isascii() and instance.isdigit() and int(instance) < 2**63:
        found = list(qs.filter(pk=int(instance)))
        if found:
            return found
    return list(qs.filter(name=instance))


def entitlements_at(at: datetime) -> EntitlementReport:
    """Every instance as the records say it was at `at` (the audit PDF's closing section)."""
    return entitlements_for(instances=instances_for(), at=at)
