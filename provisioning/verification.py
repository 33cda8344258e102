"""Revocation that proves itself: after a revoke applies (a person's, a grant's expiry, an
offboarding, a review's decision: all are revoke requests through the engine), the worker reads
the catalog again and records whether the privileges are really gone.

- Gone: `grant.revocation_verified` with outcome `verified` (the role, the objects, what was
  checked), in the portal database, after the revoke's own `request.applied`.
- Still there (a grant by another grantor that the admin's REVOKE does not reach, a GRANT made
  between apply and check, a revoke that silently matched nothing): one DriftFinding
  (unexpected_privilege) per privilege left, each with `drift.detected`, and
  `grant.revocation_verified` with outcome `failed` naming them (details.reason, .remaining).
- An offboarding's `disable` request (ALTER ROLE … NOLOGIN): the role must no longer have
  LOGIN; if it has, a drift finding (dangerous_attribute, LOGIN) and the same event `failed`.
- A role the portal made that the revoke left with nothing (no active portal grant, no privilege
  or ownership anywhere on the cluster, member of nothing and nobody's group) is proposed for
  removal: a `drop_role` system request, submitted for review under the `drop_role` approval
  policy (`role.removal_proposed`, `request.submitted`), never applied without approval.

Only direct grants to the role are checked: privileges it gets through a group role are the
group's grants, not the ones this revoke took back. The catalog read runs over the instance's
admin login (catalog tables are readable by any role, so the least-privilege login suffices).
A failure to read is logged and recorded (`grant.revocation_verified`, outcome `failed`,
reason "could not read the catalog"), never raised into the apply that already committed.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from audit.services import record
from portal.choices import (
    OPEN_STATUSES,
    SCHEMA_PRIVILEGES,
    TABLE_PRIVILEGES,
    DriftKind,
    DriftStatus,
    RequestStatus,
    RequestType,
    Risk,
)
from portal.models import ChangeRequest, Grant, ManagedRole
from portal.notifications import notify_enqueue
from provisioning.connections import connect, describe_error
from provisioning.models import DriftFinding, RoleLastSeen
from provisioning.plans import module_for, plan_hash, plan_text
from provisioning.plans.drop_role import holds_nothing

log = structlog.get_logger(__name__)

# Direct privileges of one role in one schema: on the schema, its tables, and the default
# privileges for tables created there (the objects a grant or revoke request touches).
REMAINING_SQL = """
WITH r AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %(role)s)
SELECT 'schema', NULL::text, a.privilege_type
FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
WHERE n.nspname = %(schema)s AND a.grantee = (SELECT oid FROM r)
UNION ALL
SELECT 'table', c.relname::text, a.privilege_type
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.grantee = (SELECT oid FROM r)
UNION ALL
SELECT 'default', d.defaclobjtype::text, a.privilege_type
FROM pg_catalog.pg_default_acl d JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) a
WHERE n.nspname = %(schema)s AND d.defaclobjtype = 'r' AND a.grantee = (SELECT oid FROM r)
"""


def _object_name(object_type: str, schema: str, obj: str | None) -> str:
    # The same names the drift scan gives (provisioning/drift.py), so a later scan finds the
    # finding opened here as its own instead of opening a second one.
    if object_type == "schema":
        return schema
    if object_type == "default":
        return f"{schema} (future tables)"
    return f"{schema}.{obj}"


def remaining_privileges(instance: Any, payload: dict) -> list[tuple[str, str, str]]:
    """(object_type, object name, privilege) of the revoked privileges the role still holds directly."""
    revoked = set(payload.get("privileges") or [])
    tables = payload.get("tables")
    schema = payload["schema"]
    with connect(instance, payload["database"], autocommit=True) as conn:
        rows = conn.execute(REMAINING_SQL, {"role": payload["role"], "schema": schema}).fetchall()
    left = []
    for object_type, obj, privilege in rows:
        if privilege not in revoked:
            continue
        if object_type == "schema" and privilege in SCHEMA_PRIVILEGES:
            left.append(("schema", _object_name("schema", schema, None), privilege))
        elif object_type == "table" and privilege in TABLE_PRIVILEGES and (
                tables == "all" or (isinstance(tables, list) and obj in tables)):
            left.append(("table", _object_name("table", schema, obj), privilege))
        elif object_type == "default" and payload.get("default_privileges") and privilege in TABLE_PRIVILEGES:
            left.append(("default", _object_name("default", schema, obj), privilege))
    return sorted(set(left))


def verify_revocation(request: ChangeRequest) -> dict:
    """Check one applied revoke on its cluster and record the result (see the module's docstring)."""
    payload = request.payload
    base = {"role": payload.get("role"), "database": payload.get("database"), "schema": payload.get("schema"),
            "privileges": payload.get("privileges"), "tables": payload.get("tables")}
    try:
        remaining = remaining_privileges(request.instance, payload)
    except psycopg.Error as exc:
        log.warning("verification.read_failed", request=request.pk, error=describe_error(exc))
        record("grant.revocation_verified", object_type="request", object_id=request.pk, instance=request.instance,
               database=payload.get("database", ""), request_id=request.pk, outcome="failed",
               details={**base, "reason": f"could not read the catalog: {describe_error(exc)}"})
        return {"verified": False, "remaining": None}
    with transaction.atomic():
        findings = [] if not remaining else _open_findings(request, remaining)
        record("grant.revocation_verified", object_type="request", object_id=request.pk, instance=request.instance,
               database=payload.get("database", ""), request_id=request.pk,
               outcome="verified" if not remaining else "failed",
               details={**base, "checked_at": timezone.now().isoformat(),
                        **({"reason": "privileges still held after the revoke",
                            "remaining": [f"{p} on {t} {o}" for t, o, p in remaining],
                            "drift_findings": findings} if remaining else {})})
    proposal = None if remaining else propose_removal_if_unused(request)
    return {"verified": not remaining, "remaining": remaining, "drift_findings": findings if remaining else [],
            "removal_proposed": proposal.pk if proposal is not None else None}


def _open_findings(request: ChangeRequest, remaining: list[tuple[str, str, str]]) -> list[int]:
    payload, ids = request.payload, []
    for object_type, name, privilege in remaining:
        key = {"instance": request.instance, "database": payload["database"], "kind": DriftKind.UNEXPECTED,
               "role": payload["role"], "object_type": object_type, "object_name": name, "privilege": privilege}
        existing = DriftFinding.objects.filter(status__in=[DriftStatus.OPEN, DriftStatus.ACKNOWLEDGED], **key).first()
        if existing is not None:
            ids.append(existing.pk)
            continue
        detail = (f"{payload['role']} still holds {privilege} on {object_type} {name} after revoke request "
                  f"#{request.pk} applied (granted by someone else, or again since)")
        finding = DriftFinding.objects.create(detail=detail, **key)
        record("drift.detected", object_type="drift", object_id=finding.pk, instance=request.instance,
               database=payload["database"], request_id=request.pk, outcome=DriftKind.UNEXPECTED,
               details={"role": payload["role"], "object": name, "privilege": privilege, "detail": detail,
                        "source": "revocation_verification"})
        ids.append(finding.pk)
    return ids


# --- a role left with nothing ------------------------------------------------------------------------


def role_holds_nothing(instance: Any, role: str) -> bool:
    """The drop_role plan's own assertion, read now (the same SQL: one definition of "nothing")."""
    with connect(instance, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT {}").format(holds_nothing(role))).fetchone()
    return bool(row and row[0])


def propose_removal_if_unused(request: ChangeRequest) -> ChangeRequest | None:
    """File a `drop_role` request for the revoked role when the portal made it and it now holds
    nothing; at most one open proposal per role. Returns the request filed (None: not proposed)."""
    role_name = request.payload.get("role", "")
    managed = ManagedRole.objects.filter(instance=request.instance, name=role_name, dropped_at__isnull=True).first()
    if managed is None:
        return None  # not the portal's: a DBA's role is theirs to remove
    if Grant.objects.filter(instance=request.instance, role=role_name, revoked_at__isnull=True).exists():
        return None
    if ChangeRequest.objects.filter(instance=request.instance, type=RequestType.DROP_ROLE, payload__name=role_name,
                                    status__in=[*OPEN_STATUSES, RequestStatus.FAILED]).exists():
        return None
    try:
        if not role_holds_nothing(request.instance, role_name):
            return None
    except psycopg.Error as exc:
        log.warning("verification.orphan_check_failed", request=request.pk, error=describe_error(exc))
        return None
    payload = {"name": role_name}
    plan = plan_text(module_for(RequestType.DROP_ROLE).render(payload))
    seen = RoleLastSeen.objects.filter(instance=request.instance, role=role_name).values_list(
        "last_seen_at", flat=True).first()
    justification = (f"role {role_name} holds nothing after revoke request #{request.pk}: no grants, no "
                     f"memberships, owns nothing; last seen connected: "
                     f"{seen.isoformat() if seen else 'never, since sampling began'}")
    with transaction.atomic():
        proposal = ChangeRequest.objects.create(
            type=RequestType.DROP_ROLE, instance=request.instance, team=managed.team, requester=None,
            justification=justification, payload=payload, plan=plan, plan_hash=plan_hash(plan), risk=Risk.MEDIUM,
            risk_reasons=["removes a role (DROP ROLE)"], status=RequestStatus.SUBMITTED,
        )
        record("role.removal_proposed", object_type="role", object_id=role_name, instance=request.instance,
               request_id=proposal.pk, outcome="proposed",
               details={"after_revoke": request.pk, "last_seen_at": seen.isoformat() if seen else None})
        record("request.submitted", object_type="request", object_id=proposal.pk, instance=request.instance,
               request_id=proposal.pk, outcome=RequestStatus.SUBMITTED,
               details={"type": RequestType.DROP_ROLE, "team": managed.team.name, "risk": proposal.risk,
                        "plan_hash": proposal.plan_hash, "plan": plan, "reason": "role left with nothing"})
        proposal_id = proposal.pk
        transaction.on_commit(lambda: notify_enqueue(proposal_id, "submitted"))
    return proposal


# An offboarded login role (a `disable` request: ALTER ROLE … NOLOGIN) must no longer log in.
CAN_LOGIN_SQL = "SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = %(role)s"


def verify_disabled(request: ChangeRequest) -> dict:
    """Check that the role of an applied `disable` request can no longer log in; a role that still
    can (ALTER ROLE … LOGIN typed since) opens a drift finding (dangerous_attribute, LOGIN)."""
    role = request.payload.get("role", "")
    base = {"role": role, "what": "login"}
    try:
        with connect(request.instance, autocommit=True) as conn:
            row = conn.execute(CAN_LOGIN_SQL, {"role": role}).fetchone()
    except psycopg.Error as exc:
        log.warning("verification.read_failed", request=request.pk, error=describe_error(exc))
        record("grant.revocation_verified", object_type="request", object_id=request.pk, instance=request.instance,
               request_id=request.pk, outcome="failed",
               details={**base, "reason": f"could not read the catalog: {describe_error(exc)}"})
        return {"verified": False}
    still = bool(row and row[0])
    with transaction.atomic():
        findings: list[int] = []
        if still:
            key = {"instance": request.instance, "database": "", "kind": DriftKind.DANGEROUS, "role": role,
                   "object_type": "role", "object_name": role, "privilege": "LOGIN"}
            finding = DriftFinding.objects.filter(status__in=[DriftStatus.OPEN, DriftStatus.ACKNOWLEDGED],
                                                  **key).first()
            if finding is None:
                detail = f"{role} can still log in after disable request #{request.pk} applied"
                finding = DriftFinding.objects.create(detail=detail, **key)
                record("drift.detected", object_type="drift", object_id=finding.pk, instance=request.instance,
                       request_id=request.pk, outcome=DriftKind.DANGEROUS,
                       details={"role": role, "object": role, "privilege": "LOGIN", "detail": detail,
                                "source": "revocation_verification"})
            findings.append(finding.pk)
        record("grant.revocation_verified", object_type="request", object_id=request.pk, instance=request.instance,
               request_id=request.pk, outcome="failed" if still else "verified",
               details={**base, "checked_at": timezone.now().isoformat(),
                        **({"reason": "the role can still log in", "drift_findings": findings} if still else {})})
    return {"verified": not still}


# What each kind of request takes away, and how it is checked again (`disable` exists once
# offboarding is installed: looked up by value so this module does not depend on it).
VERIFIERS = {RequestType.REVOKE.value: verify_revocation, "disable": verify_disabled}


def verify_applied(requests: list[ChangeRequest]) -> None:
    """The engine's hook after a batch is recorded: verify every applied revoke and offboarding
    (disable); never raises."""
    for request in requests:
        verifier = VERIFIERS.get(request.type)
        if verifier is None or request.status != RequestStatus.APPLIED:
            continue
        try:
            verifier(request)
        except Exception:
            log.exception("verification.crashed", request=request.pk)
