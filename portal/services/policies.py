"""Platform admins edit approval policies; every change is audited (policy.changed) with before and after."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import record
from portal.choices import Environment, Persona, Risk
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import ApprovalPolicy
from portal.querysets import is_admin


def policy_update(*, actor: Any, policy: ApprovalPolicy, approvals_required: int, approver_groups: list[str],
                  require_owner_lead: bool, auto_approve: bool, actor_ip: str | None = None) -> ApprovalPolicy:
    """Change one policy (platform admins); audited as policy.changed with the before and after."""
    if not is_admin(actor):
        raise PolicyViolation("only platform admins change approval policies")
    if not 0 <= int(approvals_required) <= 5:
        raise InvalidPayload.field("approvals_required", "must be between 0 and 5")
    unknown = sorted(set(approver_groups) - set(Persona.values))
    if unknown:
        raise InvalidPayload.field("approver_groups", f"unknown group(s): {', '.join(unknown)}")
    if auto_approve and not (policy.environment == Environment.DEV and policy.risk == Risk.LOW):
        raise InvalidPayload.field("auto_approve", "only low-risk changes in dev may be approved automatically")
    if not auto_approve and int(approvals_required) == 0:
        raise InvalidPayload.field("approvals_required", "at least 1 unless the policy approves automatically")
    if not auto_approve and not approver_groups:
        raise InvalidPayload.field("approver_groups", "name at least one group that may approve")
    fields = ("approvals_required", "approver_groups", "require_owner_lead", "auto_approve")
    with transaction.atomic():
        policy = ApprovalPolicy.objects.select_for_update().get(pk=policy.pk)
        before = {f: getattr(policy, f) for f in fields}
        policy.approvals_required = int(approvals_required)
        policy.approver_groups = sorted(approver_groups)
        policy.require_owner_lead = bool(require_owner_lead)
        policy.auto_approve = bool(auto_approve)
        policy.save()
        after = {f: getattr(policy, f) for f in fields}
        record("policy.changed", actor=actor, actor_ip=actor_ip, object_type="approval_policy", object_id=policy.pk,
               details={"environment": policy.environment, "request_type": policy.request_type, "risk": policy.risk,
                        "before": before, "after": after})
    return policy
