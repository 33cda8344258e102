"""Approval policies: the defaults and the lookup for a request."""

from __future__ import annotations

from portal.choices import Environment, Persona, RequestType, Risk
from portal.models import ApprovalPolicy

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
    """Create the default policies that do not exist yet (idempotent); returns how many were made."""
    created = 0
    for (environment, risk), approvals in DEFAULT_APPROVALS.items():
        for request_type in RequestType.values:
            _, made = ApprovalPolicy.objects.get_or_create(
                environment=environment, request_type=request_type, risk=risk,
                defaults={
                    "approvals_required": approvals,
                    "approver_groups": [Persona.REVIEWERS.value, Persona.ADMINS.value],
                    "require_owner_lead": request_type in (RequestType.GRANT, RequestType.REVOKE),
                },
            )
            created += made
    return created


def policy_for(*, environment: str, request_type: str, risk: str) -> ApprovalPolicy:
    policy = ApprovalPolicy.objects.filter(environment=environment, request_type=request_type, risk=risk).first()
    if policy is None:
        # A missing row never means "no approval needed": fall back to the strictest default.
        return ApprovalPolicy(environment=environment, request_type=request_type, risk=risk,
                              approvals_required=2,
                              approver_groups=[Persona.REVIEWERS.value, Persona.ADMINS.value])
    return policy
