"""Time-bound access: grants past their `expires_at` are revoked by the portal itself.

Each expired grant becomes a system revoke request (no requester) with its own plan, approved
by the expiry rule and queued through the outbox like any other request, so it leaves the same
audit trail (`grant.expired`, `request.queued`, `sql.executed`, `request.applied`). Applying a
revoke also ends the role's live sessions on that database (provisioning/sessions.py).
"""

from __future__ import annotations

from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone

from audit.services import record
from portal.choices import PRIVILEGES, TABLE_PRIVILEGES, RequestStatus, RequestType, Risk
from portal.models import ChangeRequest, Grant, ManagedSchema
from provisioning.outbox import enqueue_apply
from provisioning.plans import module_for, plan_hash, plan_text

log = structlog.get_logger(__name__)


def _justification(grant: Grant) -> str:
    return f"grant #{grant.pk} expired at {grant.expires_at.isoformat()}"


def revoke_payload_for(grant: Grant) -> dict[str, Any]:
    """The revoke that takes back exactly what the grant gave. A grant of table privileges also
    gave USAGE on the schema; it is taken back too unless another active grant of the same role
    on the same schema still needs it."""
    privileges = list(grant.privileges)
    if any(p in TABLE_PRIVILEGES for p in privileges) and "USAGE" not in privileges:
        others = Grant.objects.filter(instance=grant.instance, database=grant.database, schema=grant.schema,
                                      role=grant.role, revoked_at__isnull=True).exclude(pk=grant.pk)
        if not others.exists():
            privileges.append("USAGE")
    owner = (grant.request.payload or {}).get("schema_owner") if grant.request_id else None
    if not owner:
        managed = ManagedSchema.objects.filter(instance=grant.instance, database=grant.database,
                                               name=grant.schema).first()
        owner = managed.owner_role if managed else None
    has_table_privileges = any(p in TABLE_PRIVILEGES for p in privileges)
    return {
        "role": grant.role, "database": grant.database, "schema": grant.schema,
        "privileges": [p for p in PRIVILEGES if p in privileges],  # allow-list order, as submit does
        "tables": (grant.tables or "all") if has_table_privileges else None,
        "default_privileges": bool(grant.default_privileges and has_table_privileges and owner),
        "expires_at": None, "schema_owner": owner,
    }


def expire_grant(grant: Grant) -> ChangeRequest | None:
    """File, approve and queue the system revoke of one expired grant (once)."""
    with transaction.atomic():
        locked = (Grant.objects.select_for_update(skip_locked=True, of=("self",))
                  .select_related("instance", "team", "request").filter(pk=grant.pk, revoked_at__isnull=True).first())
        if locked is None:
            return None
        if ChangeRequest.objects.filter(requester__isnull=True, type=RequestType.REVOKE,
                                        justification=_justification(locked)).exists():
            return None  # already filed (it may be queued, running, or failed awaiting a reviewer)
        payload = revoke_payload_for(locked)
        plan = plan_text(module_for(RequestType.REVOKE).render(payload, secrets=None))
        now = timezone.now()
        request = ChangeRequest.objects.create(
            type=RequestType.REVOKE, instance=locked.instance, team=locked.team, requester=None,
            justification=_justification(locked), payload=payload, plan=plan, plan_hash=plan_hash(plan),
            risk=Risk.LOW, risk_reasons=["system revoke of an expired grant"], status=RequestStatus.APPROVED,
            approved_at=now,
        )
        record("grant.expired", object_type="grant", object_id=locked.pk, instance=locked.instance,
               database=locked.database, request_id=request.pk, outcome="revoke_filed",
               details={"role": locked.role, "schema": locked.schema, "privileges": locked.privileges,
                        "expires_at": locked.expires_at.isoformat(), "grant_request": locked.request_id})
        record("request.submitted", object_type="request", object_id=request.pk, instance=locked.instance,
               request_id=request.pk, outcome="approved", details={"type": "revoke", "reason": "grant expiry",
                                                                   "plan_hash": request.plan_hash})
        enqueue_apply(request)
    return request


def expire_grants(*, now=None, limit: int = 100) -> list[int]:
    """The beat job: one system revoke per grant past its expiry. Returns the new request ids."""
    now = now or timezone.now()
    filed: list[int] = []
    for grant in Grant.objects.filter(expires_at__lte=now, revoked_at__isnull=True).order_by("expires_at")[:limit]:
        try:
            request = expire_grant(grant)
        except Exception:
            log.exception("expiry.failed", grant=grant.pk)
            continue
        if request is not None:
            filed.append(request.pk)
    if filed:
        log.info("expiry.filed", requests=filed)
    return filed
