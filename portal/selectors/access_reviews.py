"""Access reviews (issue #18) as people read them: campaigns, a certifier's queue, the report.

Campaigns go through `restrict()`: reviewers, auditors and platform admins see every campaign;
a certifier sees the campaigns holding an item assigned to them, and of those only their own
items. Anyone else sees none (a 404). The report (CSV and PDF in the house style of
audit/exports/pdf.py) is built here; producing it is audited by the service that calls it.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, TableStyle

from audit.exports.pdf import BODY, CELL, CONTENT_WIDTH, H1, MARGIN, MUTED, PAGE_WIDTH, RULE, SMALL, TITLE, _esc, _table
from portal.choices import RequestStatus
from portal.models import AccessReviewCampaign, AccessReviewItem
from portal.selectors.activity import last_seen_many

ITEM_FILTERS = ("decision", "instance", "role", "schema", "team", "certifier", "source")
PENDING = "pending"


def campaign_list_for(user: Any) -> QuerySet[AccessReviewCampaign]:
    """The campaigns the user may see, newest first, with their item counts (one query)."""
    return (AccessReviewCampaign.objects.restrict(user, "view").select_related("opened_by", "fallback_certifier")
            .annotate(item_count=Count("items"), decided_count=Count("items", filter=~Q(items__decision="")))
            .order_by("-opened_at", "-id"))


def campaign_get_for(user: Any, pk: Any) -> AccessReviewCampaign | None:
    if isinstance(pk, bool) or not str(pk).isdigit() or int(pk) >= 2**63:
        return None
    return campaign_list_for(user).filter(pk=int(pk)).first()


def items_for(user: Any, campaign: AccessReviewCampaign, filters: dict[str, str] | None = None
              ) -> QuerySet[AccessReviewItem]:
    """A campaign's items the user may see (a certifier: their own; reviewers, auditors and admins:
    all), filtered by decision (pending | keep | revoke | shorten), instance, role, schema, owning
    team, certifier (a username) or source (grant | outside)."""
    items = (AccessReviewItem.objects.restrict(user, "view").filter(campaign=campaign)
             .select_related("instance", "owning_team", "certifier", "decided_by", "revoke_request", "grant",
                             "escalated_from"))
    filters = filters or {}
    decision = filters.get("decision") or ""
    if decision == PENDING:
        items = items.filter(decision="")
    elif decision:
        items = items.filter(decision=decision)
    if filters.get("instance"):
        items = items.filter(instance__name=filters["instance"])
    for name in ("role", "schema", "source"):
        if filters.get(name):
            items = items.filter(**{name: filters[name]})
    if filters.get("team"):
        items = items.filter(owning_team__name=filters["team"])
    if filters.get("certifier"):
        items = items.filter(certifier__username=filters["certifier"])
    return items.order_by("instance__name", "database", "schema", "role", "id")


def may_decide(user: Any, item: AccessReviewItem, campaign: AccessReviewCampaign) -> bool:
    """Whether the page offers `user` the decision on `item` (the service decides for real)."""
    return (campaign.status == "open" and not item.decision and item.certifier_id == getattr(user, "pk", None)
            and user.username not in item.holders)


@dataclass
class ItemView:
    """An item with what is read live beside its frozen evidence."""

    item: AccessReviewItem
    last_seen: datetime | None
    revoke_status: str
    revoke_applied_at: datetime | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.item, name)


def with_live_evidence(items: list[AccessReviewItem]) -> list[ItemView]:
    """Last seen connected (helper sampling, portal/selectors/activity.py) and the state of each
    revoke request, in one query each."""
    seen = last_seen_many((i.instance_id, i.role) for i in items)
    return [ItemView(item=i, last_seen=seen.get((i.instance_id, i.role)),
                     revoke_status=i.revoke_request.status if i.revoke_request_id else "",
                     revoke_applied_at=i.revoke_request.applied_at if i.revoke_request_id else None)
            for i in items]


def campaign_progress(campaign: AccessReviewCampaign) -> dict[str, Any]:
    items = AccessReviewItem.objects.filter(campaign=campaign)
    counts = dict(items.values_list("decision").annotate(n=Count("id")).order_by())
    total = sum(counts.values())
    decided = total - counts.get("", 0)
    revokes = items.filter(revoke_request__isnull=False)
    applied = revokes.filter(revoke_request__status=RequestStatus.APPLIED).count()
    return {"total": total, "decided": decided, "pending": counts.get("", 0),
            "keep": counts.get("keep", 0), "revoke": counts.get("revoke", 0), "shorten": counts.get("shorten", 0),
            "completion": round(100 * decided / total, 1) if total else 100.0,
            "revokes_filed": revokes.count(), "revokes_applied": applied,
            "escalated": items.filter(escalated_at__isnull=False).count(),
            "automatic": items.filter(~Q(decision=""), decided_by__isnull=True).count()}


# --- the report -------------------------------------------------------------------------------

CSV_COLUMNS = ["item", "instance", "environment", "database", "schema", "role", "privileges", "tables", "source",
               "owning_team", "certifier", "certifier_reason", "escalated_from", "escalated_at", "decision",
               "decided_by", "decided_at", "comment", "new_expires_at", "revoke_request", "revoke_status",
               "revoke_applied_at", "requested_by", "approved_by", "granted_at", "expires_at", "last_seen",
               "drift_findings"]


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


def _tables_text(tables: Any) -> str:
    return tables if isinstance(tables, str) else " ".join(tables or [])


def _report_items(campaign: AccessReviewCampaign) -> list[ItemView]:
    items = list(AccessReviewItem.objects.filter(campaign=campaign)
                 .select_related("instance", "owning_team", "certifier", "decided_by", "revoke_request",
                                 "escalated_from").order_by("instance__name", "database", "schema", "role", "id"))
    return with_live_evidence(items)


def _row(view: ItemView) -> dict[str, str]:
    item, evidence = view.item, view.item.evidence or {}
    return {
        "item": str(item.pk), "instance": item.instance.name, "environment": item.instance.environment,
        "database": item.database, "schema": item.schema, "role": item.role,
        "privileges": " ".join(item.privileges), "tables": _tables_text(item.tables), "source": item.source,
        "owning_team": item.owning_team.name if item.owning_team else "",
        "certifier": item.certifier.username if item.certifier else "", "certifier_reason": item.certifier_reason,
        "escalated_from": item.escalated_from.username if item.escalated_from else "",
        "escalated_at": _iso(item.escalated_at), "decision": item.decision or PENDING,
        "decided_by": (item.decided_by.username if item.decided_by else ("system" if item.decision else "")),
        "decided_at": _iso(item.decided_at), "comment": item.comment, "new_expires_at": _iso(item.new_expires_at),
        "revoke_request": str(item.revoke_request_id or ""), "revoke_status": view.revoke_status,
        "revoke_applied_at": _iso(view.revoke_applied_at), "requested_by": evidence.get("requester", ""),
        "approved_by": " ".join(evidence.get("approvers", [])), "granted_at": evidence.get("granted_at") or "",
        "expires_at": evidence.get("expires_at") or "", "last_seen": _iso(view.last_seen),
        "drift_findings": " ".join(f"#{d['id']}" for d in evidence.get("drift", [])),
    }


def _summary(campaign: AccessReviewCampaign) -> list[tuple[str, str]]:
    progress = campaign_progress(campaign)
    scope = campaign.scope or {}
    return [
        ("campaign", f"#{campaign.pk} {campaign.name}"), ("status", campaign.status),
        ("scope", "; ".join(f"{k}: {', '.join(scope.get(k) or []) or 'all'}"
                            for k in ("instances", "environments", "teams"))),
        ("opened_by", campaign.opened_by.username), ("opened_at", _iso(campaign.opened_at)),
        ("deadline", _iso(campaign.deadline)), ("unanswered_action", campaign.unanswered_action),
        ("fallback_certifier", campaign.fallback_certifier.username), ("closed_at", _iso(campaign.closed_at)),
        ("items", str(progress["total"])), ("decided", str(progress["decided"])),
        ("completion_rate", f"{progress['completion']}%"),
        ("kept", str(progress["keep"])), ("revoked", str(progress["revoke"])), ("shortened", str(progress["shorten"])),
        ("revocations_applied", f"{progress['revokes_applied']} of {progress['revokes_filed']}"),
        ("unreachable_instances", ", ".join(sorted(campaign.unreachable or {})) or "none"),
    ]


def campaign_report_csv(campaign: AccessReviewCampaign) -> str:
    """Summary lines (# key: value), then one row per item."""
    out = io.StringIO()
    writer = csv.writer(out)
    for key, value in _summary(campaign):
        writer.writerow([f"# {key}", value])
    certifiers = sorted({v.item.certifier.username for v in _report_items(campaign) if v.item.certifier})
    writer.writerow(["# certifiers", " ".join(certifiers)])
    writer.writerow(CSV_COLUMNS)
    for view in _report_items(campaign):
        row = _row(view)
        writer.writerow([_csv_safe(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def _csv_safe(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: comments are user input.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "—"


def campaign_report_pdf(campaign: AccessReviewCampaign, *, author: Any, now: datetime | None = None) -> bytes:
    now = now or timezone.now()
    views = _report_items(campaign)
    author_name = getattr(author, "username", str(author))

    def decorate(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(MUTED)
        canvas.drawString(MARGIN, 10 * mm, f"dbportal access review #{campaign.pk} · {campaign.name}"[:110])
        canvas.drawRightString(PAGE_WIDTH - MARGIN, 10 * mm, f"page {doc.page}")
        canvas.setStrokeColor(RULE)
        canvas.line(MARGIN, 12.5 * mm, PAGE_WIDTH - MARGIN, 12.5 * mm)
        canvas.restoreState()

    story: list[Any] = [Spacer(1, 20 * mm), Paragraph("Access review report", TITLE),
                        Paragraph(_esc(f"Campaign #{campaign.pk}: {campaign.name}"), BODY), Spacer(1, 6 * mm)]
    cover = [[k.replace("_", " "), Paragraph(_esc(v), BODY)] for k, v in _summary(campaign)]
    cover += [["report author", Paragraph(_esc(author_name), BODY)], ["generated", Paragraph(_iso(now), BODY)]]
    cover_table = _table(cover, [45 * mm, CONTENT_WIDTH - 45 * mm], header=False, zebra=False)
    cover_table.setStyle(TableStyle([("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9)]))
    story += [cover_table, Spacer(1, 6 * mm)]

    per_certifier: dict[str, list[int]] = {}
    for view in views:
        name = view.item.certifier.username if view.item.certifier else "(unassigned)"
        counts = per_certifier.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += 1 if view.item.decision else 0
    rows = [["certifier", "items", "decided", "completion"]] + [
        [_esc(name), str(total), str(done), f"{round(100 * done / total, 1)}%"]
        for name, (total, done) in sorted(per_certifier.items())]
    story += [Paragraph("Certifiers", H1), _table(rows, [CONTENT_WIDTH * 0.4, CONTENT_WIDTH * 0.2,
                                                           CONTENT_WIDTH * 0.2, CONTENT_WIDTH * 0.2]), PageBreak()]

    story += [Paragraph("Every item and its decision", H1), Paragraph(
        "One row per privilege in scope when the campaign opened: portal grants with who requested and approved "
        "them, and privileges found on the cluster that the portal did not grant (source outside). A revoke "
        "decision became a system revoke request; its applied time is when the engine took the privilege back.",
        SMALL), Spacer(1, 3 * mm)]
    rows = [["#", "instance · db.schema", "role · privileges", "source · evidence", "certifier", "decision",
             "comment", "revocation"]]
    for view in views:
        row = _row(view)
        evidence = f"{row['source']}"
        if row["requested_by"]:
            evidence += f" · asked by {row['requested_by']}, approved by {row['approved_by'] or '—'}"
        evidence += f" · last seen {row['last_seen'][:16] or 'not sampled yet'}"
        if row["drift_findings"]:
            evidence += f" · drift {row['drift_findings']}"
        decision = row["decision"]
        if view.item.decision:
            decision += f"<br/>{_esc(row['decided_by'])}, {_when(view.item.decided_at)}"
        if view.item.new_expires_at:
            decision += f"<br/>until {_when(view.item.new_expires_at)}"
        revocation = "—"
        if view.item.revoke_request_id:
            revocation = f"#{view.item.revoke_request_id} {_esc(view.revoke_status)}"
            if view.revoke_applied_at:
                revocation += f"<br/>applied {_when(view.revoke_applied_at)}"
        rows.append([Paragraph(str(view.item.pk), CELL),
                     Paragraph(_esc(f"{row['instance']} · {row['database']}.{row['schema']}"), CELL),
                     Paragraph(f"<b>{_esc(row['role'])}</b> {_esc(row['privileges'])} {_esc(row['tables'])}", CELL),
                     Paragraph(_esc(evidence), CELL), Paragraph(_esc(row["certifier"] or "—"), CELL),
                     Paragraph(decision, CELL), Paragraph(_esc(row["comment"]) or "—", CELL),
                     Paragraph(revocation, CELL)])
    if len(rows) == 1:
        story.append(Paragraph("The scope held no privilege to review.", BODY))
    else:
        w = CONTENT_WIDTH
        story.append(_table(rows, [w * 0.05, w * 0.14, w * 0.15, w * 0.2, w * 0.09, w * 0.13, w * 0.13, w * 0.11]))

    with tempfile.TemporaryFile(suffix=".pdf") as handle:
        doc = SimpleDocTemplate(handle, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                                bottomMargin=18 * mm, title=f"Access review #{campaign.pk}", author=author_name,
                                subject=f"dbportal access review {campaign.name}", creator="dbportal")
        doc.build(story, onFirstPage=decorate, onLaterPages=decorate)
        handle.seek(0)
        return handle.read()

