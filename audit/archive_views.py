"""Auditor pages for the archived months: the list of archives and one archived month's events, with
the online log's filters, oldest first, paged by seq. Auditors and platform admins only; each read is
an `audit.viewed` event (audit.services.audit_access_record). Read-only: nothing here archives,
detaches or deletes (audit/archive.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from audit.archive import online_cutoff
from audit.archive_reads import ArchiveNotFound, archive_events_page, archive_get, archive_list
from audit.selectors import FILTER_FIELDS, parse_filters, parse_seq
from audit.services import audit_access_record
from portal.errors import Gone, InvalidPayload
from portal.personas import is_auditor
from portal.services.auth import client_ip

PAGE = 50


def _require_auditor(user) -> None:
    if not is_auditor(user):
        raise PermissionDenied("auditors and platform admins only")


@login_required
@require_GET
def audit_archives(request):
    _require_auditor(request.user)
    archives = archive_list()
    audit_access_record(actor=request.user, actor_ip=client_ip(request), view="archives")
    return render(request, "audit/archives.html", {"archives": archives, "online_since": online_cutoff()})


@login_required
@require_GET
def audit_archive_events(request, period: str):
    _require_auditor(request.user)
    try:
        archive = archive_get(period)
    except (ArchiveNotFound, InvalidPayload) as exc:
        raise Http404(str(exc)) from None
    except Gone:
        return render(request, "audit/archive.html", {"archive": None, "period": period}, status=410)
    errors: dict[str, list[str]] = {}
    events, cursor = [], None
    try:
        filters = parse_filters(request.GET)
        after = parse_seq(request.GET, "after")
        events, cursor = archive_events_page(archive, filters, after=after, limit=PAGE)
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="archive", parameters=request.GET,
                            object_id=archive.period)
    except InvalidPayload as exc:
        errors = exc.errors
    query = urlencode({k: request.GET[k] for k in FILTER_FIELDS if request.GET.get(k)})
    export = reverse("api:audit-archive-export", args=[archive.period])
    return render(request, "audit/archive.html", {
        "archive": archive, "period": archive.period, "events": events, "errors": errors,
        "filters": {k: request.GET.get(k, "") for k in FILTER_FIELDS},
        "next_url": f"?{query + '&' if query else ''}after={cursor}" if cursor else "",
        "first_url": f"?{query}" if request.GET.get("after") else "",
        "exports": {fmt: f"{export}?{urlencode({'format': fmt})}{'&' + query if query else ''}" for fmt in ("csv", "jsonl")},
    })
