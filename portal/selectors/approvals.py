"""Approvals of one request: what it needs (Requirement), whether it has it (Tally), and who may
decide on it now (the decision rules, one definition for the review queue and the approve action).

The policy lookup for a request is here too; the defaults and their editing are
portal/services/policies.py. The SQL text of the rules that need subqueries (written once per
process) is portal/selectors/decision_sql.py's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from django.db.models import BooleanField, ExpressionWrapper, JSONField, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from guardian.shortcuts import get_users_with_perms

from portal.choices import Decision, Environment, Persona, RequestStatus, RequestType, Risk
from portal.errors import Conflict, DomainError, PolicyViolation
from portal.models import Approval, ApprovalPolicy, ChangeRequest, Team
from portal.personas import is_admin, is_reviewer, user_groups
from portal.selectors.decision_sql import (
    _ROW_COLUMNS,
    RowCondition,
    _approver_sql,
    _led_teams_sql,
    _policy_sql,
    _undecided_sql,
)

# Who decides where no policy row exists (see policy_for).
FALLBACK_APPROVER_GROUPS = (Persona.REVIEWERS.value, Persona.ADMINS.value)


def policy_for(*, environment: str, request_type: str, risk: str) -> ApprovalPolicy:
    policy = ApprovalPolicy.objects.filter(environment=environment, request_type=request_type, risk=risk).first()
    if policy is None:
        return _fallback_policy(environment=environment, request_type=request_type, risk=risk)
    return policy


def _fallback_policy(*, environment: str, request_type: str, risk: str) -> ApprovalPolicy:
    # A missing row never means "no approval needed": fall back to the strictest default.
    return ApprovalPolicy(environment=environment, request_type=request_type, risk=risk,
                          approvals_required=2, approver_groups=list(FALLBACK_APPROVER_GROUPS))


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
                    owner_team: Team | None, policy: ApprovalPolicy | None = None) -> Requirement:
    """`policy`: the row policy_for would return, when the caller has read it already."""
    policy = policy or policy_for(environment=environment, request_type=request_type, risk=risk)
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
                                  risk=request.risk, team=request.team, owner_team=request.owner_team,
                                  policy=_policy_annotated(request))
    requirement_keep(request, requirement)
    return requirement


def _policy_annotated(request: ChangeRequest) -> ApprovalPolicy | None:
    """The policy row with_decision_rules read with the request (as policy_for would answer:
    the fallback when none exists), or None when it was not read that way."""
    if POLICY not in vars(request):
        return None
    row = vars(request)[POLICY]
    environment = request.instance.environment
    if row is None:
        return _fallback_policy(environment=environment, request_type=request.type, risk=request.risk)
    return ApprovalPolicy(id=row["id"], environment=environment, request_type=request.type, risk=request.risk,
                          approvals_required=row["approvals_required"], approver_groups=row["approver_groups"],
                          require_owner_lead=row["require_owner_lead"], auto_approve=row["auto_approve"])


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
    """The request's approvals when already loaded (request_get_for), else None."""
    return getattr(request, "loaded_approvals", None)


def approvals_of(request: ChangeRequest) -> list[Approval]:
    """The request's approvals, oldest first: the ones request_get_for loaded, else one query."""
    loaded = _approvals_of(request)
    if loaded is not None:
        return loaded
    return list(request.approvals.select_related("reviewer").order_by("created_at"))


def approver_groups_of(user: Any) -> set[str]:
    """The persona groups a user approves as (a superuser counts as a platform admin)."""
    groups = set(user_groups(user))
    if is_admin(user):
        groups.add(Persona.ADMINS.value)
    return groups


def team_leads(team: Team) -> set[int]:
    """Ids of the team's leads: members holding the guardian permission `portal.lead_team` on
    `team`, given to them or to one of their groups (not superusers). The same definition as the
    decision rules' (decision_sql._led_teams_sql): a group holding the permission does not make its
    users who are not members leads, so the tally and the notifications agree with who may decide."""
    users = get_users_with_perms(team, only_with_perms_in=["lead_team"], with_superusers=False,
                                 with_group_users=True)
    return set(users.filter(memberships__team=team).values_list("pk", flat=True))


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


# --- who may decide now: the decision rules -----------------------------------------------------


@dataclass(frozen=True)
class DecisionRule:
    """One condition a request must meet for a user to approve or reject it, as a Q over ChangeRequest.

    The review queue (portal.selectors.requests.pending_reviews_queryset) filters by every rule;
    the approve and reject actions evaluate each rule on the one row (as annotations of the row
    they lock) and raise the first one that fails. So the queue holds exactly what its user may
    decide on: there is no second copy of these conditions to drift apart.
    """

    name: str
    build: Callable[[], Q]
    error: type[DomainError]

    @functools.cached_property
    def condition(self) -> Q:
        """The rule's Q, built on first use: a refusal an earlier rule settles on the loaded row
        (one's own request, on every submit's answer and most detail reads) never needs the
        approver rule's subqueries, and building them cost more than the rest of that check."""
        return self.build()


def _teams_led_by(user: Any) -> RawSQL:
    """The ids (a subquery) of the teams the user belongs to and leads (see _led_teams_sql)."""
    return RawSQL(_led_teams_sql(), [user.pk, user.pk, user.pk])


def leads_team(user: Any, team: Team) -> bool:
    """True when the user belongs to the team and leads it (the same rule as _led_teams_sql)."""
    if not getattr(user, "is_authenticated", False):
        return False
    return Team.objects.filter(pk=team.pk).filter(pk__in=_teams_led_by(user)).exists()


def _may_approve(user: Any) -> RowCondition:
    """The user is someone the request's policy asks for: in one of its approver groups (the
    fallback groups when no policy row exists, as policy_for), or a lead of the team owning the
    schema when the policy wants that lead (cross-team access; cross-team grants always do, as
    requirement_for). Someone who is no reviewer decides only as such a lead, on their team's schemas."""
    groups = sorted(approver_groups_of(user))
    reviewer = is_reviewer(user)
    text = _approver_sql(in_groups=bool(groups), fallback_member=bool(set(FALLBACK_APPROVER_GROUPS) & set(groups)),
                         reviewer=reviewer)
    # approver_groups is a JSON array of names: ?| is true when any of the user's groups is in it.
    params = ([groups] if groups else []) + [user.pk] * 3 + ([] if reviewer else [user.pk] * 3)
    return RowCondition(text, _ROW_COLUMNS, tuple(params))


def decision_rules(user: Any) -> list[DecisionRule]:
    """The conditions under which `user` may approve or reject a request, in the order their
    failures are reported. One's own requests and a system request one filed (drift revoke) are
    others' to decide; so is a plan one already decided on (approvals bind to the plan hash)."""
    # Built once per user object (one web request): the detail read annotates them and the decision
    # check reads them back; the user's groups they depend on are cached on the same object
    # already (portal.personas).
    cached = vars(user).get("_portal_decision_rules")
    if cached is not None:
        return cached

    user._portal_decision_rules = rules = [
        DecisionRule("waiting", lambda: Q(status=RequestStatus.SUBMITTED), Conflict),
        DecisionRule("not_requester", lambda: ~Q(requester=user), PolicyViolation),
        DecisionRule("not_filer", lambda: ~Q(filed_by=user), PolicyViolation),
        DecisionRule("undecided", lambda: Q(RowCondition(_undecided_sql(), _ROW_COLUMNS, (user.pk,))), Conflict),
        DecisionRule("approver", lambda: Q(_may_approve(user)), PolicyViolation),
    ]
    return rules


# The request's policy row, read with the decision annotations (portal.models.ApprovalPolicy's
# fields requirement_for reads; NULL: no row, policy_for's fallback).
POLICY = "decision_policy"


def _policy_row() -> RowCondition:
    return RowCondition(_policy_sql(), _ROW_COLUMNS, output_field=JSONField())


def _rule_annotation(rule: DecisionRule) -> str:
    return f"decision_{rule.name}"


# Annotation naming the user the decision_* annotations of a row were computed for.
DECIDER = "decision_user"


def with_decision_rules(queryset: QuerySet[ChangeRequest], user: Any) -> QuerySet[ChangeRequest]:
    """The rows annotated with whether each decision rule holds for `user` (no extra query: the
    detail read and the approve action's lock carry them in their own SELECT)."""
    if not getattr(user, "is_authenticated", False):
        return queryset
    annotations = {_rule_annotation(rule): ExpressionWrapper(rule.condition, output_field=BooleanField())
                   for rule in decision_rules(user)}
    # The policy requirement_of needs comes in the same SELECT (no policy query of its own).
    return queryset.annotate(**annotations, **{DECIDER: Value(user.pk), POLICY: _policy_row()})


def decision_rules_forget(request: ChangeRequest) -> None:
    """Drop the decision annotations of a request the caller has just changed (they are stale)."""
    vars(request).pop(DECIDER, None)


def _in_memory(condition: Q, request: ChangeRequest) -> bool | None:
    """The value of `condition` for `request` as loaded, when it only compares the row's own
    columns for equality (status, requester, filer); None when it needs the database (a
    subquery, a join). The same Q the queue filters by, read off the object instead of the row:
    a refusal for one's own request or a decided one then costs no query."""
    results = []
    for child in condition.children:
        if isinstance(child, Q):
            value = _in_memory(child, request)
        elif isinstance(child, tuple) and len(child) == 2 and "__" not in child[0]:
            field = ChangeRequest._meta.get_field(child[0])
            if field.is_relation:
                wanted = getattr(child[1], "pk", child[1])
                value = getattr(request, field.attname) == wanted
            elif hasattr(child[1], "resolve_expression"):
                value = None
            else:
                value = getattr(request, field.attname) == child[1]
        else:
            value = None
        if value is None:
            return None
        results.append(value)
    held = all(results) if condition.connector == Q.AND else any(results)
    return not held if condition.negated else held


def _failed_rule(user: Any, request: ChangeRequest) -> DecisionRule | None:
    rules = decision_rules(user)
    names = [_rule_annotation(rule) for rule in rules]
    annotated = vars(request).get(DECIDER) == user.pk and all(name in vars(request) for name in names)
    for index, rule in enumerate(rules):
        if annotated:
            held = vars(request)[names[index]]
        else:
            held = _in_memory(rule.condition, request)
            if held is None:
                # The rest needs the database: the same conditions for this one row (one query).
                return _failed_in_database(rules[index:], request)
        if not held:
            return rule
    return None


def _failed_in_database(rules: list[DecisionRule], request: ChangeRequest) -> DecisionRule | None:
    values = (ChangeRequest.objects.filter(pk=request.pk)
              .values_list(*[ExpressionWrapper(rule.condition, output_field=BooleanField()) for rule in rules])
              .first())
    held = list(values) if values is not None else [False] * len(rules)
    return next((rule for rule, ok in zip(rules, held, strict=True) if not ok), None)


def _refusal(rule: DecisionRule, request: ChangeRequest) -> str:
    if rule.name == "waiting":
        return f"the request is {request.status}, no longer waiting for a decision"
    if rule.name == "not_requester":
        return "you cannot approve or reject your own request"
    if rule.name == "not_filer":
        return "you filed this request: another reviewer must decide on it"
    if rule.name == "undecided":
        return "you already decided on this plan"
    requirement = requirement_of(request)
    who = ", ".join(requirement.approver_groups) or "nobody"
    if requirement.owner_lead_team is not None:
        who += f" or a lead of team {requirement.owner_lead_team}"
    return f"only {who} may decide on this request"


def decision_check(user: Any, request: ChangeRequest) -> None:
    """Raise unless `user` may approve or reject `request` now: PolicyViolation (403) when they may
    not, Conflict (409) when the request or their own earlier decision stands in the way."""
    if not getattr(user, "is_authenticated", False):
        raise PolicyViolation("sign in first")
    failed = _failed_rule(user, request)
    if failed is not None:
        raise failed.error(_refusal(failed, request))
