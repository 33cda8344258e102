"""Approval policies: the defaults, and their editing by platform admins (every change audited as
policy.changed with before and after). The lookup for a request, who may approve it and whether
it has its approvals, are reads: portal/selectors/approvals.py."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import record
from portal.choices import Environment, Persona, RequestType, Risk
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import ApprovalPolicy
from portal.personas import is_admin

# (environment, risk) -> approvals required. Every type follows it; cross-team grants also need
# the owning team's lead. Only low-risk dev changes may be auto-approved, and none is by default.
DEFAULT_APPROVALS = {
    (Environment.DEV, Risk.LOW): 1,
    (Environment.DEV, Risk.MEDIUM): 1,
    (Environment.DEV, Risk.HIGH): 2,
    (Environment.STAGING, Risk.LOW): 1,
    (Environment.STAGING, Risk.MEDIUM): 1,
    (Environment.STAGING, Risk.HIGH): 2,
    (Environment.PROD, Risk.LOW): 1,
    (Environment.PROD, Risk.MEDIUM): 2,
    (Environment.PROD, Risk.HIGH): 2,
}


def policy_seed_defaults() -> int:
    """Create the default policies that do not exist yet (idempotent); returns how many were made.

    One read and one insert, not a get_or_create per row: it runs on every `make run` and for
    every test that seeds the personas. A row made meanwhile by someone else is left as it is."""
    existing = set(ApprovalPolicy.objects.values_list("environment", "request_type", "risk"))
    missing = [
        ApprovalPolicy(
            environment=environment, request_type=request_type, risk=risk, approvals_required=approvals,
            approver_groups=[Persona.REVIEWERS.value, Persona.ADMINS.value],
            require_owner_lead=request_type in (RequestType.GRANT, RequestType.REVOKE),
        )
        for (environment, risk), approvals in DEFAULT_APPROVALS.items()
        for request_type in RequestType.values
        if (environment, request_type, risk) not in existing
    ]
    return len(ApprovalPolicy.objects.bulk_create(missing, ignore_conflicts=True))


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
               outcome="changed", details={"environment": policy.environment, "request_type": policy.request_type, "risk": policy.risk,
                        "before": before, "after": after})
    return policy
