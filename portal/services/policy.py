"""Approval policies: the defaults and the lookup for a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from guardian.shortcuts import get_users_with_perms

from portal.choices import Decision, Environment, Persona, RequestStatus, RequestType, Risk
from portal.models import Approval, ApprovalPolicy, ChangeRequest, Team
from portal.querysets import is_admin, user_groups

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


# Who decides where no policy row exists (see policy_for).
FALLBACK_APPROVER_GROUPS = (Persona.REVIEWERS.value, Persona.ADMINS.value)


def policy_for(*, environment: str, request_type: str, risk: str) -> ApprovalPolicy:
    policy = ApprovalPolicy.objects.filter(environment=environment, request_type=request_type, risk=risk).first()
    if policy is None:
        # A missing row never means "no approval needed": fall back to the strictest default.
        return ApprovalPolicy(environment=environment, request_type=request_type, risk=risk,
                              approvals_required=2, approver_groups=list(FALLBACK_APPROVER_GROUPS))
    return policy


# --- who approves a given request -------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """What a request needs before it is approved, from its policy and the schema's owner team."""

    approvals_required: int
    approver_groups: list[str]
    owner_lead_team: Team | None  # a lead of this team must approve too (cross-team access)
    auto_approve: bool

    def as_dict(self) -> dict:
        return {"approvals_required": self.approvals_required, "approver_groups": list(self.approver_groups),
                "requires_owner_lead": self.owner_lead_team is not None,
                "owner_team": self.owner_lead_team.name if self.owner_lead_team else None}


def requirement_for(*, environment: str, request_type: str, risk: str, team: Team | None,
                    owner_team: Team | None) -> Requirement:
    policy = policy_for(environment=environment, request_type=request_type, risk=risk)
    cross_team = owner_team is not None and (team is None or owner_team.pk != team.pk)
    # Access into another team's schema always needs that team's lead, whatever the policy row says
    # (or when none exists): a role of one team is never granted into another team's schema without
    # it. For other types (a revoke) the policy's require_owner_lead decides.
    lead_team = owner_team if cross_team and (policy.require_owner_lead or request_type == RequestType.GRANT) \
        else None
    # Auto-approval only ever for low-risk dev changes, and never when another team must agree.
    auto = bool(policy.auto_approve and environment == Environment.DEV and risk == Risk.LOW and lead_team is None)
    return Requirement(approvals_required=policy.approvals_required, approver_groups=list(policy.approver_groups),
                       owner_lead_team=lead_team, auto_approve=auto)


def requirement_of(request: ChangeRequest) -> Requirement:
    # Kept on the object for the rest of the HTTP request: a detail view and an approval ask
    # for it two or three times (one policy query each), and a request's type, risk, instance
    # and teams do not change once submitted. Keyed anyway, so an edited object is re-read.
    memo = getattr(request, "_portal_requirement", None)
    if memo is not None and memo[0] == _requirement_key(request):
        return memo[1]
    requirement = requirement_for(environment=request.instance.environment, request_type=request.type,
                                  risk=request.risk, team=request.team, owner_team=request.owner_team)
    requirement_keep(request, requirement)
    return requirement


def _requirement_key(request: ChangeRequest) -> tuple:
    return (request.instance_id, request.type, request.risk, request.team_id, request.owner_team_id)


def requirement_keep(request: ChangeRequest, requirement: Requirement) -> None:
    """Remember `requirement` as requirement_of(request), when the caller has just worked it out
    from the same instance, type, risk and teams (request_submit, from its preview)."""
    request._portal_requirement = (_requirement_key(request), requirement)


def groups_load(users: list[Any], known: Any = None) -> None:
    """Fill the user_groups() cache of several users with one query (not one per user).

    `known`: a user whose groups are already cached (the caller, loaded with its token), so
    another object for the same person (an approval's reviewer) needs no query.
    """
    known_groups = getattr(known, "_portal_groups", None)
    if known_groups is not None:
        for user in users:
            if user.pk == known.pk and getattr(user, "_portal_groups", None) is None:
                user._portal_groups = known_groups
    missing = {user.pk: user for user in users if getattr(user, "_portal_groups", None) is None}
    if not missing:
        return
    found: dict[int, set[str]] = {pk: set() for pk in missing}
    for user_id, name in Group.objects.filter(user__in=list(missing)).values_list("user", "name"):
        found[user_id].add(name)
    for pk, user in missing.items():
        user._portal_groups = found[pk]


def _approvals_of(request: ChangeRequest) -> list[Approval] | None:
    """The request's approvals when already prefetched (request_get_for), else None."""
    prefetched = getattr(request, "_prefetched_objects_cache", {}).get("approvals")
    return list(prefetched) if prefetched is not None else None


def approver_groups_of(user: Any) -> set[str]:
    """The persona groups a user approves as (a superuser counts as a platform admin)."""
    groups = set(user_groups(user))
    if is_admin(user):
        groups.add(Persona.ADMINS.value)
    return groups


def team_leads(team: Team) -> set[int]:
    """Ids of the users holding the guardian permission `portal.lead_team` on `team` (not superusers)."""
    users = get_users_with_perms(team, only_with_perms_in=["lead_team"], with_superusers=False,
                                 with_group_users=True)
    return set(users.values_list("pk", flat=True))


def is_team_lead(user: Any, team: Team | None) -> bool:
    return team is not None and getattr(user, "pk", None) in team_leads(team)


@dataclass(frozen=True)
class Tally:
    group_approvals: int
    lead_approved: bool
    approvers: list[str]
    satisfied: bool


def approval_tally(request: ChangeRequest, requirement: Requirement | None = None, viewer: Any = None) -> Tally:
    """Approvals that count: decision approve, on the current plan hash, from an eligible person.

    `viewer`: the user asking, whose groups are cached (see groups_load)."""
    requirement = requirement or requirement_of(request)
    leads = team_leads(requirement.owner_lead_team) if requirement.owner_lead_team else set()
    prefetched = _approvals_of(request)
    if prefetched is not None:
        # The same rows the query below selects, from the detail view's prefetch (created_at order).
        approvals = sorted((a for a in prefetched if a.decision == Decision.APPROVE and a.plan_hash == request.plan_hash),
                           key=lambda a: a.created_at)
    else:
        approvals = list(Approval.objects.filter(request=request, decision=Decision.APPROVE,
                                                 plan_hash=request.plan_hash)
                         .select_related("reviewer").order_by("created_at"))
    groups_load([approval.reviewer for approval in approvals], known=viewer)
    group_count, lead_ok, approvers = 0, False, []
    for approval in approvals:
        counted = False
        if approval.reviewer_id in request.author_ids:
            continue  # never counts, even if it got in somehow
        if approver_groups_of(approval.reviewer) & set(requirement.approver_groups):
            group_count += 1
            counted = True
        if approval.reviewer_id in leads:
            lead_ok = True
            counted = True
        if counted:
            approvers.append(approval.reviewer.username)
    satisfied = group_count >= requirement.approvals_required and (requirement.owner_lead_team is None or lead_ok)
    return Tally(group_approvals=group_count, lead_approved=lead_ok, approvers=approvers, satisfied=satisfied)


def decision_eligibility(user: Any, request: ChangeRequest) -> tuple[bool, str, int]:
    """May `user` approve or reject `request` now? (ok, reason, http status when not)."""
    if not getattr(user, "is_authenticated", False):
        return False, "sign in first", 403
    if request.status != RequestStatus.SUBMITTED:
        return False, f"the request is {request.status}, no longer waiting for a decision", 409
    if request.requester_id == user.pk:
        return False, "you cannot approve or reject your own request", 403
    if request.filed_by_id == user.pk:
        return False, "you filed this request: another reviewer must decide on it", 403
    prefetched = _approvals_of(request)
    if prefetched is not None:
        decided = any(a.reviewer_id == user.pk and a.plan_hash == request.plan_hash for a in prefetched)
    else:
        decided = Approval.objects.filter(request=request, reviewer=user, plan_hash=request.plan_hash).exists()
    if decided:
        return False, "you already decided on this plan", 409
    requirement = requirement_of(request)
    if approver_groups_of(user) & set(requirement.approver_groups):
        return True, "", 200
    if requirement.owner_lead_team is not None and is_team_lead(user, requirement.owner_lead_team):
        return True, "", 200
    who = ", ".join(requirement.approver_groups) or "nobody"
    if requirement.owner_lead_team is not None:
        who += f" or a lead of team {requirement.owner_lead_team}"
    return False, f"only {who} may decide on this request", 403
