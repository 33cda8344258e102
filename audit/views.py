"""Auditor screens: the log with filters and keyset pages, event detail, verify, exports (the entitlements
page is portal/views/entitlements.py)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods

from audit.archive_reads import archived_event_get
from audit.models import AuditEvent
from audit.selectors import (
    COUNT_CAP,
    FILTER_FIELDS,
    action_names,
    event_count,
    event_get,
    event_neighbours,
    event_page,
    parse_filters,
    parse_seq,
)
from audit.services import audit_access_record, audit_verify
from portal.errors import InvalidPayload
from portal.models import Instance
from portal.personas import is_auditor
from portal.services.auth import client_ip

PAGE = 50


def _require_auditor(user) -> None:
    if not is_auditor(user):
        raise PermissionDenied("auditors and platform admins only")


def _filter_query(params) -> str:
    return urlencode({k: params[k] for k in FILTER_FIELDS if params.get(k)})


def _export_links(query: str) -> dict[str, str]:
    base = reverse("api:audit-export")
    return {fmt: f"{base}?{urlencode({'format': fmt})}{'&' + query if query else ''}" for fmt in ("csv", "jsonl", "pdf")}


@login_required
@require_GET
def audit_log(request):
    _require_auditor(request.user)
    errors: dict[str, list[str]] = {}
    events, older, total = [], None, 0
    try:
        filters = parse_filters(request.GET)
        before = parse_seq(request.GET, "before")
        events, older = event_page(filters, before=before or 0, limit=PAGE)
        total = event_count(filters)
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="log", parameters=request.GET)
    except InvalidPayload as exc:
        errors = exc.errors
    query = _filter_query(request.GET)
    context = {
        "events": events,
        "total": total,
        "total_capped": total > COUNT_CAP,
        "count_cap": COUNT_CAP,
        "older_url": f"?{query + '&' if query else ''}before={older}" if older else "",
        "newest_url": f"?{query}" if request.GET.get("before") else "",
        "filters": {k: request.GET.get(k, "") for k in FILTER_FIELDS},
        "errors": errors,
        "actions": action_names(),
        "instances": Instance.objects.order_by("name").values_list("name", flat=True),
        "exports": _export_links(query),
    }
    return render(request, "audit/log.html", context)


@login_required
@require_GET
def audit_event_detail(request, seq: int):
    _require_auditor(request.user)
    event = event_get(seq) or archived_event_get(seq)  # a detached month's event from its archive
    if event is None:
        raise Http404("no such event")
    # The neighbours as the log stood when the event was opened (not this very read's own event).
    previous, following = event_neighbours(seq)
    audit_access_record(actor=request.user, actor_ip=client_ip(request), view="event", object_id=seq)
    template = "audit/_event.html" if request.htmx else "audit/event.html"
    return render(request, template, {"event": event, "previous": previous, "following": following,
                                      "drawer": bool(request.htmx)})


@login_required
@require_http_methods(["GET", "POST"])
def audit_verify_page(request):
    _require_auditor(request.user)
    result = None
    if request.method == "POST":
        result = audit_verify(actor=request.user, actor_ip=client_ip(request))
        if request.htmx:
            return render(request, "audit/_verify_result.html", {"result": result})
    history = AuditEvent.objects.filter(action="audit.verified").order_by("-seq")[:10]
    return render(request, "audit/verify.html", {"result": result, "history": history})


@login_required
@require_GET
def audit_exports(request):
    _require_auditor(request.user)
    today = timezone.now().date()
    first = today.replace(day=1)
    last_month_end = first - timedelta(days=1)
    presets = [
        ("This month", first, today),
        ("Last month", last_month_end.replace(day=1), last_month_end),
        ("Last 7 days", today - timedelta(days=6), today),
    ]
    exports = []
    for label, since, until in presets:
        exports.append({"label": label, "since": since, "until": until,
                        "links": _export_links(urlencode({"since": since.isoformat(), "until": until.isoformat()}))})
    recent = AuditEvent.objects.filter(action="audit.exported").order_by("-seq")[:15]
    return render(request, "audit/exports.html", {
        "presets": exports, "export_url": reverse("api:audit-export"), "since": first, "until": today,
        "recent": recent, "actions": action_names(),
        "instances": Instance.objects.order_by("name").values_list("name", flat=True),
    })
