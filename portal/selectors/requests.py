"""Reads of change requests, always through restrict(): out-of-scope requests do not exist (404)."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, Q, QuerySet, prefetch_related_objects
from django.db.models.expressions import RawSQL
from django.http import Http404
from django.shortcuts import get_object_or_404
from psycopg import sql

from portal.errors import DomainError
from portal.models import Approval, ChangeRequest, Execution, Grant, Instance, ManagedRole, Team
from portal.models.request import risk_rank
from portal.personas import is_reviewer
from portal.selectors.approvals import decision_check, decision_rules, with_decision_rules
from portal.selectors.paging import BoundedCountPaginator


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
    # isascii: "²".isdigit() is True, yet int("²") raises; ids stop below 2**63 (bigint): anything
    # else made of digits can only be a name.
    if text.isascii() and text.isdigit() and int(text) < 2**63:
        return Q(pk=int(text))
    return Q(name=text)


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
        qs = qs.filter(instance__in=Instance.objects.filter(_by_id_or_name(filters["instance"])))
    return qs


def request_page_for(user: Any) -> QuerySet[ChangeRequest]:
    """request_list_for for a page of the API list: the related rows' names as annotations.

    A page holds up to 500 rows; building an Instance, two Teams and a User object (admin
    credentials, password hash, timestamps) per row only to read their names was most of a
    list's CPU time. portal/api/requests.py RequestOutput reads the `listed_*` names.
    """
    # Each name by a subquery on its primary key, not a join: five joins made PostgreSQL plan the
    # page's statement over six relations and every index of the requests table (2.7 ms of
    # planning for a 0.3 ms execution of the review queue's page), and the count kept the inner
    # joins. instance and team are NOT NULL (PROTECT): no row is dropped either way; an empty
    # owner team, requester or filer gives NULL as the outer join did. Fixed text (RawSQL), not
    # Subquery(): compiling five ORM subqueries cost the web 2 ms a page, more than it saved.
    user_model = get_user_model()
    return request_list_for(user).select_related(None).annotate(
        listed_instance=RawSQL(_name_sql(Instance, "instance", "name"), ()),
        listed_team=RawSQL(_name_sql(Team, "team", "name"), ()),
        listed_owner_team=RawSQL(_name_sql(Team, "owner_team", "name"), ()),
        listed_requester=RawSQL(_name_sql(user_model, "requester", "username"), ()),
        listed_filed_by=RawSQL(_name_sql(user_model, "filed_by", "username"), ()))


@cache
def _name_sql(model: Any, foreign_key: str, name: str) -> str:
    """`(SELECT name FROM model's table WHERE pk = the request row's foreign_key column)`: refers to
    the requests table by its own name, so only for a top-level query over ChangeRequest (the API's
    list page), never for one used as a subquery (Django would alias the table there)."""
    return sql.SQL("SELECT {name} FROM {table} WHERE {pk} = {requests}.{column}").format(
        name=sql.Identifier(model._meta.get_field(name).column), table=sql.Identifier(model._meta.db_table),
        pk=sql.Identifier(model._meta.pk.column), requests=sql.Identifier(ChangeRequest._meta.db_table),
        column=sql.Identifier(ChangeRequest._meta.get_field(foreign_key).column)).as_string(None)


def _history(*, empty: bool = False) -> tuple[Prefetch, Prefetch]:
    approvals = Approval.objects.none() if empty else Approval.objects.select_related("reviewer").order_by("created_at")
    executions = Execution.objects.none() if empty else Execution.objects.order_by("attempt")
    # to_attr: whoever reads a request's approvals later (the tally, the page, the API) can tell a
    # loaded list from a query to make (portal.selectors.approvals.approvals_of).
    return (Prefetch("approvals", queryset=approvals, to_attr="loaded_approvals"),
            Prefetch("executions", queryset=executions))


def request_id_or_404(pk: Any) -> int:
    """`pk` as a request id, or Http404 when it cannot be one (no row could have it)."""
    # isascii: "²".isdigit() is True, yet int("²") raises (a 500).
    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        raise Http404("no such request")
    return int(pk)


def request_get_for(user: Any, pk: Any, *, history: bool = True, user_names: bool = False) -> ChangeRequest:
    """One request with its approvals and executions, or Http404 when out of scope (or not an id).

    history=False: without them (two queries fewer), for a transition that locks and re-reads
    the row anyway. user_names: the requester's and the filer's usernames as `listed_requester`
    and `listed_filed_by` instead of their rows (the API's answer reads nothing else of them):
    two joins fewer, which PostgreSQL planned for longer than it ran the statement (1.0 ms of
    planning with six joins, 0.3 ms with four).
    """
    request_id_or_404(pk)
    if not history:
        return get_object_or_404(request_list_for(user), pk=pk)
    rows = request_list_for(user)
    if user_names:
        user_model = get_user_model()
        rows = rows.select_related(None).select_related("instance", "team", "owner_team").annotate(
            listed_requester=RawSQL(_name_sql(user_model, "requester", "username"), ()),
            listed_filed_by=RawSQL(_name_sql(user_model, "filed_by", "username"), ()))
    if is_reviewer(user):
        # Whether a reviewer may decide on it comes with the row (a detail page shows it). Others
        # mostly read their own requests, which the first rules settle on the loaded row with no
        # query (selectors.approvals._in_memory): compiling and planning the rules' subqueries
        # for every read of those cost more than the read itself (bench/load.py's detail reads).
        rows = with_decision_rules(rows, user)
    # change_set_item: the change set it belongs to (access as code), in the same query.
    return get_object_or_404(rows.select_related("change_set_item").prefetch_related(*_history()), pk=pk)


def request_history_load(request: ChangeRequest, *, new: bool = False, never_ran: bool = False) -> ChangeRequest:
    """Attach approvals and executions to a request a service has just read or written, as
    request_get_for would (two queries; none when `new`: a request the caller has just created
    has neither yet; one when `never_ran`: a request that was never queued has no executions).
    What is attached already is not read again. The response of a transition is built from the
    row the service locked, without reading it again."""
    approvals, executions = _history(empty=new)
    if never_ran:
        executions = _history(empty=True)[1]
    prefetch_related_objects([request], approvals, executions)
    return request


def can_approve(user: Any, request: ChangeRequest) -> tuple[bool, str]:
    """May `user` approve or reject `request` now, and if not, why (selectors.approvals.decision_check)."""
    try:
        decision_check(user, request)
    except DomainError as refusal:
        return False, refusal.detail
    return True, ""


def pending_reviews_queryset(user: Any) -> QuerySet[ChangeRequest]:
    """Submitted requests this user may decide on now, highest risk first, then oldest first.

    All in one statement (the nav badge counts it on every page): the requests the user sees that
    meet every one of selectors.approvals.decision_rules, the conditions the approve action checks.
    """
    if not getattr(user, "is_authenticated", False):
        return ChangeRequest.objects.none()
    # The order of request_pending_idx (its expression and columns), so the page reads it in order.
    return (request_list_for(user).filter(*[rule.condition for rule in decision_rules(user)])
            .annotate(risk_rank=risk_rank()).order_by("-risk_rank", "created_at", "id"))


def pending_reviews(user: Any) -> list[ChangeRequest]:
    """pending_reviews_queryset as a list (one query)."""
    return list(pending_reviews_queryset(user))


# The nav badge and the queue's heading count at most this many waiting requests, then show "100+":
# an exact count evaluates the decision rules for every pending request (about 10 ms a thousand,
# on every page, bench/scale.py), while the queue's first rows come from request_pending_idx.
PENDING_COUNT_SHOWN = 100


def pending_review_count(user: Any) -> int:
    """How many requests wait for this user (the nav badge): one COUNT query of at most
    PENDING_COUNT_SHOWN + 1 rows (pending_count_label shows more than PENDING_COUNT_SHOWN as "100+")."""
    return BoundedCountPaginator(pending_reviews_queryset(user), 1, bound=PENDING_COUNT_SHOWN + 1).count


def pending_count_label(count: int) -> str:
    """The one rule for showing how many requests wait, for the nav badge and the queue's heading
    alike: exact up to PENDING_COUNT_SHOWN, "100+" past it. Past it even when the count is exact:
    a queue page past the fifth counts to its own end (selectors.paging.count_bound), and the
    heading saying "110" beside a badge saying "100+" would be two answers to one question."""
    return f"{PENDING_COUNT_SHOWN}+" if count > PENDING_COUNT_SHOWN else str(count)


def my_access(user: Any) -> dict[str, QuerySet]:
    """What the user's teams hold today: active grants (with expiry) and the roles the portal made."""
    teams = Team.objects.filter(memberships__user=user)
    grants = (Grant.objects.filter(team__in=teams, revoked_at__isnull=True)
              .select_related("instance", "team", "request").order_by("expires_at", "instance__name", "role"))
    roles = (ManagedRole.objects.filter(team__in=teams, dropped_at__isnull=True)
             .select_related("instance", "team").order_by("instance__name", "name"))
    return {"grants": grants, "roles": roles}


def resubmissions_of(request: ChangeRequest) -> list[int]:
    """The ids of the requests filed again from this one ("edit and resubmit", #19), oldest first."""
    return list(request.resubmissions.order_by("pk").values_list("pk", flat=True))
