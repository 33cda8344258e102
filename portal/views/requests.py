"""Requests: new (type cards, form with the live plan), list, search, detail with live status and actions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.choices import PRIVILEGES, TABLE_PRIVILEGES, RequestStatus, RequestType
from portal.errors import DomainError, Gone, InvalidPayload, NameConflict
from portal.forms.requests import FORMS, TYPE_CARDS, RequestForm, resubmit_initial
from portal.models import Team
from portal.personas import is_reviewer
from portal.selectors import requests as request_selectors
from portal.selectors.approvals import approvals_of
from portal.selectors.instances import instance_list_for
from portal.selectors.request_context import request_context
from portal.selectors.search import request_search
from portal.selectors.verification import revocation_verification_of
from portal.services import requests as request_services
from portal.services.auth import client_ip
from portal.services.requests import RESUBMITTABLE, preview_dry_run, request_submit, resubmit_allowed, resubmit_check
from portal.services.requests import request_preview as preview_service
from provisioning.models import RequestSecret
from provisioning.secrets import secret_reveal

# While a request is in one of these, its page polls the status partial.
LIVE_STATUSES = {RequestStatus.APPROVED, RequestStatus.QUEUED, RequestStatus.RUNNING}
PAGE_SIZE = 25


def _form_class(request_type: str) -> type[RequestForm]:
    try:
        return FORMS[request_type]
    except KeyError:
        raise Http404("unknown request type") from None


def _posted_as_initial(form_class: type[RequestForm], data) -> dict[str, Any]:
    """A POST turned into `initial` for an unbound form: the fields re-render without errors."""
    initial: dict[str, Any] = {}
    for key in data:
        values = data.getlist(key)
        initial[key] = values if key in ("privileges", "tables", "member_of") else values[-1]
    return initial


# -- new request ------------------------------------------------------------------------------
@login_required
@require_GET
def request_new(request):
    return render(request, "requests/new.html", {"cards": TYPE_CARDS, "prefill": request.GET.urlencode()})


@login_required
@require_http_methods(["GET", "POST"])
def request_new_form(request, request_type: str):
    form_class = _form_class(request_type)
    if request.method == "POST":
        form = form_class(request.POST, user=request.user)
        status = 400
        if form.is_valid():
            try:
                original = None
                if form.cleaned_data.get("resubmit_of"):
                    # out of the user's scope: 404, as for the request page itself
                    original = request_selectors.request_get_for(request.user, form.cleaned_data["resubmit_of"],
                                                                 history=False)
                change = request_submit(user=request.user, actor_ip=client_ip(request), payload=form.payload(),
                                        resubmit_of=original, **form.common(), **form.submit_options())
            except DomainError as exc:
                form.add_domain_error(exc)
                if isinstance(exc, NameConflict):
                    status = exc.status_code  # 409, shown inline on the field, like the API's answer
            else:
                messages.success(request, f"Request #{change.pk} submitted.")
                return redirect("request-detail", pk=change.pk)
    elif request.GET.get("from"):
        # "Edit and resubmit" (#19): a new request pre-filled from a failed or rejected one.
        original = request_selectors.request_get_for(request.user, request.GET["from"], history=False)
        try:
            resubmit_check(user=request.user, original=original, type=request_type)
        except InvalidPayload as exc:
            messages.error(request, exc.errors["resubmit_of"][0])
            return redirect("request-detail", pk=original.pk)
        form = form_class(initial=resubmit_initial(original), user=request.user)
        status = 200
    else:
        initial = {k: (request.GET.getlist(k) if k in ("privileges", "tables", "member_of") else v)
                   for k, v in request.GET.items()}
        form = form_class(initial=initial, user=request.user)
        status = 200
    return render(request, "requests/form.html", _form_context(form, request_type), status=status)


def _form_context(form: RequestForm, request_type: str, *, show_errors: bool = True) -> dict:
    return {"form": form, "request_type": request_type, "type_label": RequestType(request_type).label,
            "cards": TYPE_CARDS, "show_errors": show_errors}


@login_required
@require_POST
def request_form_fields(request, request_type: str):
    """htmx: the form's fields again, for the instance / database / schema just chosen."""
    form_class = _form_class(request_type)
    form = form_class(initial=_posted_as_initial(form_class, request.POST), user=request.user)
    return render(request, "requests/_fields.html", _form_context(form, request_type, show_errors=False))


@login_required
@require_POST
def request_preview(request, request_type: str):
    """htmx: the plan, its risk and who must approve, for what the form holds now (no writes)."""
    form_class = _form_class(request_type)
    form = form_class(request.POST, user=request.user)
    context: dict[str, Any] = {"form": form, "preview": None, "problems": [], "missing": []}
    if form.is_valid():
        try:
            common = form.common()
            common.pop("justification")
            context["preview"] = preview_service(user=request.user, payload=form.payload(), **common)
            # DDL on dev / staging: the dry run as the requester types (#19; debounced by the form's trigger)
            context["dry_run"] = preview_dry_run(context["preview"], type=request_type,
                                                 instance=common["instance"], team=common["team"], reuse=True)
        except (InvalidPayload, NameConflict) as exc:
            form.add_domain_error(exc)
        except DomainError as exc:
            context["problems"].append(("", exc.detail))
    for name, errors in form.errors.as_data().items():
        field = form.fields.get(name)
        label = str(form[name].label) if field else ""
        for error in errors:
            if error.code == "required":
                context["missing"].append(label)
            else:
                context["problems"].append((label, " ".join(error.messages)))
    # Every field's problems at once, for the fields the user has left (portal.js shows them next to
    # each field as it loses focus): the server's verdict, the same as at submit.
    context["field_errors"] = {name: [str(m) for m in messages] for name, messages in form.errors.items()
                               if name in form.fields}
    if form.is_valid() and request_type in (RequestType.GRANT, RequestType.REVOKE):
        context["privilege_summary"] = _privilege_summary(request_type, form.cleaned_data)
    # 200 either way: htmx swaps only 2xx answers, and the problems are the content here.
    return render(request, "requests/_preview.html", context)


def _privilege_summary(request_type: str, data: dict) -> dict:
    """What a grant / revoke preview says in words: exactly the privileges ticked, and USAGE named
    apart when the plan adds it (table privileges are useless without USAGE on the schema)."""
    ticked = [p for p in PRIVILEGES if p in (data.get("privileges") or [])]
    on_tables = any(p in TABLE_PRIVILEGES for p in ticked)
    return {"ticked": ticked, "verb": "Grants" if request_type == RequestType.GRANT else "Revokes",
            "adds_usage": request_type == RequestType.GRANT and on_tables and "USAGE" not in ticked,
            "tables": data.get("tables") if data.get("tables_mode") == "list" else None,
            "role": data.get("role"), "schema": f"{data.get('database')}.{data.get('schema')}",
            "future": bool(data.get("default_privileges"))}


# -- lists --------------------------------------------------------------------------------------
@login_required
@require_GET
def request_list(request):
    filters = {k: request.GET.get(k, "") for k in ("status", "type", "team", "instance")}
    active = {k: v for k, v in filters.items() if v}
    try:
        queryset = request_selectors.request_list_for(request.user, **active)
    except (ValueError, DomainError):
        return HttpResponseBadRequest("bad filter")
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page, "filters": filters, "any_filter": bool(active),
        "statuses": RequestStatus.choices, "types": RequestType.choices,
        "teams": Team.objects.restrict(request.user, "view").order_by("name"),
        "instances": instance_list_for(request.user),
        "querystring": urlencode(active),
        "mine_only": not is_reviewer(request.user),
    }
    return render(request, "requests/list.html", context)


@login_required
@require_GET
def request_search_view(request):
    query = request.GET.get("q", "").strip()
    results = request_search(request.user, query) if query else []
    if request.GET.get("suggest"):
        # The top bar's search suggests as you type (#19): a few matches as <option>s for its datalist.
        return render(request, "requests/_suggest.html", {"results": results[:8]})
    if query and len(results) == 1 and query.lstrip("#").isdigit():
        return redirect("request-detail", pk=results[0].pk)
    return render(request, "requests/search.html", {"query": query, "results": results})


# -- detail -------------------------------------------------------------------------------------
def _detail_context(request, change) -> dict[str, Any]:
    user = request.user
    allowed, reason = request_selectors.can_approve(user, change)
    return {
        "change": change,
        # prefetched by request_get_for (approvals with their reviewer, in order; executions by attempt)
        "approvals": approvals_of(change),
        "executions": list(change.executions.all()),
        "can_approve": allowed,
        "approve_reason": reason,
        "can_cancel": change.requester_id == user.pk and change.status == RequestStatus.SUBMITTED,
        "can_retry": is_reviewer(user) and change.status == RequestStatus.FAILED,
        "dangerous": change.risk == "high" or change.instance.environment == "prod",
        "live": change.status in LIVE_STATUSES or change.status == RequestStatus.SUBMITTED,
        # Waiting for a reviewer takes minutes, a worker seconds: poll accordingly.
        "poll_every": "5s" if change.status == RequestStatus.SUBMITTED else "1500ms",
        "is_requester": change.requester_id == user.pk,
        "viewer_reviews": is_reviewer(user),  # the reviewer's context panel (#19)
        # "Edit and resubmit" (#19): a failed or rejected request, for its requester or team; the
        # membership query runs only on such a request's page.
        "can_resubmit": change.status in RESUBMITTABLE and resubmit_allowed(user, change),
        "resubmissions": request_selectors.resubmissions_of(change) if change.status in RESUBMITTABLE else [],
        "secret": _secret_of(change),
        # Revocation verified (#18): the catalog read after an applied revoke or disable.
        "verification": revocation_verification_of(change),
    }


def _secret_of(change):
    return RequestSecret.objects.filter(request=change).first()


@login_required
@require_GET
def request_detail(request, pk: int):
    change = request_selectors.request_get_for(request.user, pk)
    return render(request, "requests/detail.html", _detail_context(request, change))


@login_required
@require_GET
def request_status(request, pk: int):
    """htmx: the live part of the detail page; it stops polling itself once the status is final."""
    change = request_selectors.request_get_for(request.user, pk)
    return render(request, "requests/_live.html", _detail_context(request, change))


@login_required
@require_GET
def request_context_view(request, pk: int):
    """htmx: the reviewer's context (#19): access diff, who else reaches the schema, sessions, the
    requester's recent requests there, approval progress. Loaded after the page, so a slow cluster
    never holds the page up; reviewers and admins only (the request out of scope: 404)."""
    change = request_selectors.request_get_for(request.user, pk, history=False)
    if not is_reviewer(request.user):
        raise PermissionDenied
    return render(request, "requests/_context.html", request_context(request.user, change))


ACTIONS = {"approve", "reject", "cancel", "retry"}


@login_required
@require_POST
def request_action(request, pk: int, action: str):
    """Approve / reject / cancel / retry: one service call each; errors come back as a message."""
    if action not in ACTIONS:
        raise Http404
    change = request_selectors.request_get_for(request.user, pk)
    comment = request.POST.get("comment", "").strip()[:2000]
    ip = client_ip(request)
    try:
        if action == "approve":
            request_services.request_approve(request=change, reviewer=request.user, comment=comment, actor_ip=ip)
        elif action == "reject":
            if not comment:
                raise InvalidPayload.field("comment", "say why the request is rejected")
            request_services.request_reject(request=change, reviewer=request.user, comment=comment, actor_ip=ip)
        elif action == "cancel":
            request_services.request_cancel(request=change, user=request.user, comment=comment, actor_ip=ip)
        else:
            request_services.request_retry(request=change, user=request.user, comment=comment, actor_ip=ip)
    except DomainError as exc:
        messages.error(request, f"Could not {action} request #{change.pk}: {exc.detail}")
        status = exc.status_code
    else:
        past = {"approve": "approved", "reject": "rejected", "cancel": "cancelled", "retry": "queued again"}[action]
        messages.success(request, f"Request #{change.pk} {past}.")
        status = 302
    target = request.POST.get("next") or reverse("request-detail", args=[change.pk])
    if not target.startswith("/") or target.startswith("//"):
        target = reverse("request-detail", args=[change.pk])
    if status == 302 and action in ("approve", "reject") and request.POST.get("land") == "next":
        target = _next_in_queue(request.user, change, from_queue=target == reverse("review-queue"))
    if status != 302 and request.htmx:
        return HttpResponse(status=status, headers={"HX-Redirect": target})
    return redirect(target)


def _next_in_queue(user, decided, *, from_queue: bool) -> str:
    """Where a reviewer lands after a decision (#19): the next request of their queue (its row when
    they decided from the queue, its page when from a request's page), or the queue when it is empty."""
    following = (request_selectors.pending_reviews_queryset(user).exclude(pk=decided.pk)
                 .values_list("pk", flat=True).first())
    if following is None:
        return reverse("review-queue")
    if from_queue:
        return f"{reverse('review-queue')}#review-{following}"
    return reverse("request-detail", args=[following])


@login_required
@require_POST
def request_reveal(request, pk: int):
    """htmx: the one-time password of a login role this request created (requester only)."""
    change = request_selectors.request_get_for(request.user, pk)
    context: dict[str, Any] = {"change": change, "password": None, "error": None, "secret": _secret_of(change),
                               "is_requester": change.requester_id == request.user.pk}
    try:
        context["password"] = secret_reveal(request=change, user=request.user, actor_ip=client_ip(request))
    except Gone:
        context["error"] = "already revealed"
        context["secret"] = _secret_of(change)
    except DomainError as exc:
        context["error"] = exc.detail
    response = render(request, "requests/_reveal.html", context)
    response["Cache-Control"] = "no-store"
    return response
