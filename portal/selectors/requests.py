"""Reads of change requests, always through restrict(): out-of-scope requests do not exist (404)."""

from __future__ import annotations

from typing import Any

from django.db.models import Case, Exists, F, IntegerField, OuterRef, Prefetch, Q, QuerySet, Value, When
from django.http import Http404
from django.shortcuts import get_object_or_404

from portal.choices import RISK_ORDER, RequestStatus
from portal.models import Approval, ApprovalPolicy, ChangeRequest, Execution, Grant, ManagedRole, Team
from portal.querysets import is_reviewer
from portal.services.policy import approver_groups_of, decision_eligibility, team_leads


def name_or_id_usable(text: str) -> bool:
    """Could this be an id or a name at all? (PostgreSQL refuses NUL and unpaired surrogates.)"""
    if not text or len(text) > 200 or "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _by_id_or_name(value: Any) -> Q:
    text = str(value)
    if not name_or_id_usable(text):
        return Q(pk__in=[])  # matches nothing
    return Q(pk=int(text)) if text.isdigit() else Q(name=text)


def request_list_for(user: Any, **filters: Any) -> QuerySet[ChangeRequest]:
    """Requests the user may see, newest first; filters: status, type, team, instance (id or name)."""
    qs = (ChangeRequest.objects.restrict(user, "view")
          .select_related("instance", "team", "requester", "owner_team", "filed_by").order_by("-id"))
    if filters.get("status"):
        qs = qs.filter(status=filters["status"])
    if filters.get("type"):
        qs = qs.filter(type=filters["type"])
    if filters.get("team"):
        qs = qs.filter(team__in=Team.objects.filter(_by_id_or_name(filters["team"])))
    if filters.get("instance"):
        from portal.models import Instance

        qs = qs.filter(instance__in=Instance.objects.filter(_by_id_or_name(filters["instance"])))
    return qs


def request_page_for(user: Any) -> QuerySet[ChangeRequest]:
    """request_list_for for a page of the API list: the related rows' names as annotations.

    A page holds up to 500 rows; building an Instance, two Teams and a User object (admin
    credentials, password hash, timestamps) per row only to read their names was most of a
    list's CPU time. portal/api/requests.py RequestOutput reads the `listed_*` names.
    """
    return request_list_for(user).select_related(None).annotate(
        listed_instance=F("instance__name"), listed_team=F("team__name"),
        listed_owner_team=F("owner_team__name"), listed_requester=F("requester__username"),
        listed_filed_by=F("filed_by__username"))


def request_get_for(user: Any, pk: Any, *, history: bool = True) -> ChangeRequest:
    """One request with its approvals and executions, or Http404 when out of scope (or not an id).

    history=False: without them (two queries fewer), for a transition that locks and re-reads
    the row anyway.
    """
    # isascii: "²".isdigit() is True, yet int("²") raises (a 500).
    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        raise Http404("no such request")
    if not history:
        return get_object_or_404(request_list_for(user), pk=pk)
    qs = request_list_for(user).prefetch_related(
        Prefetch("approvals", queryset=Approval.objects.select_related("reviewer").order_by("created_at")),
        Prefetch("executions", queryset=Execution.objects.order_by("attempt")),
    )
    return get_object_or_404(qs, pk=pk)


def can_approve(user: Any, request: ChangeRequest) -> tuple[bool, str]:
    ok, reason, _ = decision_eligibility(user, request)
    return ok, reason


def pending_reviews(user: Any) -> list[ChangeRequest]:
    """Submitted requests this user may decide on now, highest risk first, then oldest first."""
    if not getattr(user, "is_authenticated", False):
        return []
    already = Approval.objects.filter(request=OuterRef("pk"), reviewer=user, plan_hash=OuterRef("plan_hash"))
    rank = Case(*[When(risk=risk, then=Value(order)) for risk, order in RISK_ORDER.items()],
                output_field=IntegerField())
    # Neither one's own requests nor a system request one filed (drift revoke): others decide on those.
    candidates = (request_list_for(user).filter(status=RequestStatus.SUBMITTED).exclude(requester=user)
                  .exclude(filed_by=user).exclude(Exists(already)).annotate(risk_rank=rank).order_by("-risk_rank", "created_at", "id"))
    led_teams = {team.pk for team in Team.objects.filter(memberships__user=user)
                 if user.pk in team_leads(team)}
    if not is_reviewer(user):
        if not led_teams:
            return []
        candidates = candidates.filter(owner_team__in=led_teams)
    policies = {(p.environment, p.request_type, p.risk): p for p in ApprovalPolicy.objects.all()}
    groups = approver_groups_of(user)
    pending = []
    for request in candidates:
        policy = policies.get((request.instance.environment, request.type, request.risk))
        approver_groups = set(policy.approver_groups) if policy else {"reviewers", "platform-admins"}
        lead_slot = (request.owner_team_id in led_teams and request.owner_team_id != request.team_id
                     and (policy is None or policy.require_owner_lead))
        if groups & approver_groups or lead_slot:
            pending.append(request)
    return pending


def my_access(user: Any) -> dict[str, QuerySet]:
    """What the user's teams hold today: active grants (with expiry) and the roles the portal made."""
    teams = Team.objects.filter(memberships__user=user)
    grants = (Grant.objects.filter(team__in=teams, revoked_at__isnull=True)
              .select_related("instance", "team", "request").order_by("expires_at", "instance__name", "role"))
    roles = (ManagedRole.objects.filter(team__in=teams, dropped_at__isnull=True)
             .select_related("instance", "team").order_by("instance__name", "name"))
    return {"grants": grants, "roles": roles}
