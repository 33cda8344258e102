"""Actions on drift findings: acknowledge one, or file a revoke request for it (the scan that
finds them is provisioning/drift.py)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import record
from portal.choices import DriftKind, DriftStatus, RequestStatus, RequestType
from portal.errors import Conflict, InvalidPayload, TargetUnavailable
from portal.models import ChangeRequest, ManagedRole, ManagedSchema
from portal.risk import owner_team_id_for, risk_assess
from portal.selectors.plan_context import plan_context_for
from provisioning.connections import describe_error
from provisioning.inventory import inventory_refresh
from provisioning.models import DriftFinding
from provisioning.plans import module_for, plan_hash, plan_text


def drift_acknowledge(*, finding: DriftFinding, user: Any, comment: str = "", actor_ip: str | None = None
                      ) -> DriftFinding:
    with transaction.atomic():
        finding = DriftFinding.objects.select_for_update().get(pk=finding.pk)
        if finding.status != DriftStatus.OPEN:
            raise Conflict(f"a finding that is {finding.status} cannot be acknowledged")
        finding.status = DriftStatus.ACKNOWLEDGED
        finding.acknowledged_by = user
        finding.save(update_fields=["status", "acknowledged_by", "last_seen_at"])
        record("drift.acknowledged", actor=user, actor_ip=actor_ip, object_type="drift", object_id=finding.pk,
               instance=finding.instance, database=finding.database, outcome="acknowledged",
               details={"comment": comment[:2000], "role": finding.role, "object": finding.object_name,
                        "privilege": finding.privilege})
    return finding


def _revoke_payload(finding: DriftFinding) -> dict[str, Any]:
    if finding.kind != DriftKind.UNEXPECTED or finding.object_type not in ("schema", "table", "default"):
        raise Conflict("only an unexpected privilege on a schema, a table or future tables can be revoked here")
    if finding.object_type == "schema":
        schema, tables = finding.object_name, None
    elif finding.object_type == "table":
        schema, _, table = finding.object_name.partition(".")
        tables = [table]
    else:
        schema, tables = finding.object_name.split(" ", 1)[0], "all"
    return {"role": finding.role, "database": finding.database, "schema": schema,
            "privileges": [finding.privilege], "tables": tables,
            "default_privileges": finding.object_type == "default"}


def drift_revoke(*, finding: DriftFinding, user: Any, actor_ip: str | None = None) -> ChangeRequest:
    """File a revoke request for an unexpected privilege. It is a system request filed by `user`
    (recorded as its filer, so they cannot approve it) and goes through the usual approvals."""
    instance = finding.instance
    payload = _revoke_payload(finding)
    role = ManagedRole.objects.filter(instance=instance, name=finding.role).select_related("team").first()
    schema = ManagedSchema.objects.filter(instance=instance, database=finding.database,
                                          name=payload["schema"]).select_related("team").first()
    team = role.team if role else (schema.team if schema else None)
    if team is None:
        raise Conflict("neither the role nor the schema belongs to a team of the portal")
    try:
        # Drift is about changes made behind the portal's back: check against the cluster as it is.
        inventory = inventory_refresh(instance)
    except Exception as exc:
        raise TargetUnavailable(f"{instance.name}: {describe_error(exc)}") from exc
    module = module_for(RequestType.REVOKE)
    ctx = plan_context_for(instance, team, user, request_type=RequestType.REVOKE, inventory=inventory)
    validated = module.validate(payload, ctx)
    if not validated.get("tables") and finding.object_type == "table":
        raise InvalidPayload.field("tables", "the table is not in the inventory")
    plan = plan_text(module.render(validated))
    owner_team_id = owner_team_id_for(request_type=RequestType.REVOKE, payload=validated, instance=instance)
    risk, reasons = risk_assess(request_type=RequestType.REVOKE, payload=validated,
                                environment=instance.environment, team_id=team.pk, owner_team_id=owner_team_id)
    with transaction.atomic():
        finding = DriftFinding.objects.select_for_update().get(pk=finding.pk)
        if finding.status == DriftStatus.RESOLVED:
            raise Conflict("the finding is already resolved")
        request = ChangeRequest.objects.create(
            type=RequestType.REVOKE, instance=instance, team=team, requester=None, filed_by=user,
            justification=f"drift finding #{finding.pk}: {finding.detail}"[:5000], payload=validated, plan=plan,
            plan_hash=plan_hash(plan), risk=risk, risk_reasons=reasons, status=RequestStatus.SUBMITTED,
            owner_team_id=owner_team_id, submitted_ip=actor_ip or None,
        )
        record("request.submitted", object_type="request", object_id=request.pk, instance=instance,
               request_id=request.pk, outcome=RequestStatus.SUBMITTED,
               details={"type": "revoke", "team": team.name, "risk": risk, "plan_hash": request.plan_hash,
                        "plan": plan, "reason": "drift", "filed_by": getattr(user, "username", "")})
        record("drift.revoke_filed", actor=user, actor_ip=actor_ip, object_type="drift", object_id=finding.pk,
               instance=instance, database=finding.database, request_id=request.pk, outcome="revoke_filed")
    return request
