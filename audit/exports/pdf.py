"""The PDF compliance report of a period (reportlab), written to a temporary file and streamed.

Contents: a cover (period, author, generation time, the chain's verification result and head
hash), counts by action, instance and team, charts of events and applied changes per day and
of changes by risk, every change request of the period with requester, approvers and times,
the access review campaigns open in the period (issue #18), and the entitlements at the end of the period. The report holds aggregates and requests, not
every event (those are in the CSV/JSON Lines exports), so its size follows the number of
changes, not the size of the log.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone
from psycopg import sql
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from audit.chain import format_ts
from audit.models import AuditEvent
from audit.selectors import AuditFilters
from audit.verify import verify_chain
from portal.models import AccessReviewCampaign, ChangeRequest, Team

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 16 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN
# Greys and one accent print well in black and white; risk colours stay distinguishable by label.
INK = colors.HexColor("#1f2328")
MUTED = colors.HexColor("#57606a")
RULE = colors.HexColor("#d0d7de")
HEAD_BG = colors.HexColor("#eaeef2")
ACCENT = colors.HexColor("#0b5cad")
RISK_COLOURS = {"low": colors.HexColor("#2da44e"), "medium": colors.HexColor("#bf8700"),
                "high": colors.HexColor("#cf222e")}
CHANGE_ACTION = "request.applied"


class EntitlementsReport(Protocol):
    """What the closing section reads of a portal.selectors.entitlements.EntitlementReport."""

    rows: list[Any]


# A moment -> every instance's entitlements at that moment, as the records say.
EntitlementsAt = Callable[[datetime], EntitlementsReport]

_styles = getSampleStyleSheet()
TITLE = ParagraphStyle("title", parent=_styles["Title"], alignment=TA_LEFT, fontSize=22, leading=26, textColor=INK)
H1 = ParagraphStyle("h1", parent=_styles["Heading1"], fontSize=15, leading=19, spaceBefore=6, spaceAfter=6,
                    textColor=INK)
H2 = ParagraphStyle("h2", parent=_styles["Heading2"], fontSize=11.5, leading=14, spaceBefore=8, spaceAfter=4,
                    textColor=INK)
BODY = ParagraphStyle("body", parent=_styles["BodyText"], fontSize=9.5, leading=12.5, textColor=INK)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=8, leading=10)
CELL = ParagraphStyle("cell", parent=BODY, fontSize=7.6, leading=9.4)
MONO = ParagraphStyle("mono", parent=BODY, fontName="Courier", fontSize=8.5, leading=11)


def _esc(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d<br/>%H:%M") if value else "—"


def _is_midnight(value: datetime) -> bool:
    return value.astimezone(UTC).time() == datetime.min.time()


def period_text(filters: AuditFilters, now: datetime) -> str:
    """"2026-11-01 through 2026-11-30 (UTC)" for whole days, exact times otherwise."""
    since, until = filters.since, filters.until
    if since is None:
        start = "the first event"
    else:
        start = since.strftime("%Y-%m-%d") if _is_midnight(since) else since.strftime("%Y-%m-%d %H:%M")
    if until is None:
        end = f"through {now.strftime('%Y-%m-%d %H:%M')}"
    elif _is_midnight(until):
        end = f"through {(until - timedelta(days=1)).strftime('%Y-%m-%d')}"
    else:
        end = f"until {until.strftime('%Y-%m-%d %H:%M')}"
    return f"{start} {end} (UTC)"


# Table names from the models' _meta, never written into the SQL.
_TABLES = {"events": sql.Identifier(AuditEvent._meta.db_table),
           "requests": sql.Identifier(ChangeRequest._meta.db_table),
           "teams": sql.Identifier(Team._meta.db_table)}


def _query(statement: sql.Composable, params: list[Any]) -> list[tuple]:
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute(statement, params)
        return cursor.fetchall()


def _counts(filters: AuditFilters) -> dict[str, list[tuple]]:
    where, params = filters.where("e")
    by_action = _query(sql.SQL(
        "SELECT e.action, count(*) FROM {events} e WHERE {} GROUP BY 1 ORDER BY 2 DESC, 1").format(where, **_TABLES),
        params)
    by_instance = _query(sql.SQL(
        "SELECT NULLIF(e.instance, ''), count(*) FROM {events} e WHERE {} GROUP BY 1 ORDER BY 2 DESC, 1"
    ).format(where, **_TABLES), params)
    by_team = _query(sql.SQL(
        "SELECT t.name, count(*) FROM {events} e "
        "LEFT JOIN {requests} r ON r.id = e.request_id LEFT JOIN {teams} t ON t.id = r.team_id "
        "WHERE {} GROUP BY 1 ORDER BY 2 DESC, 1").format(where, **_TABLES), params)
    per_day = _query(sql.SQL(
        "SELECT (e.ts AT TIME ZONE 'UTC')::date, count(*), count(*) FILTER (WHERE e.action = %s) "
        "FROM {events} e WHERE {} GROUP BY 1 ORDER BY 1").format(where, **_TABLES), [CHANGE_ACTION, *params])
    by_risk = _query(sql.SQL(
        "SELECT r.risk, count(*) FROM {events} e JOIN {requests} r ON r.id = e.request_id "
        "WHERE e.action = %s AND {} GROUP BY 1").format(where, **_TABLES), [CHANGE_ACTION, *params])
    request_ids = _query(sql.SQL(
        "SELECT DISTINCT e.request_id FROM {events} e WHERE e.request_id IS NOT NULL AND {} "
        "ORDER BY 1").format(where, **_TABLES), params)
    return {"action": by_action, "instance": by_instance, "team": by_team, "per_day": per_day, "risk": by_risk,
            "requests": [row[0] for row in request_ids]}


def _table(rows: list[list[Any]], widths: list[float], *, header: bool = True, zebra: bool = True) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
        ("TEXTCOLOR", (0, 0), (-1, -1), INK),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
    ]
    if header:
        style += [("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8), ("BACKGROUND", (0, 0), (-1, 0), HEAD_BG),
                  ("LINEBELOW", (0, 0), (-1, 0), 0.8, MUTED)]
    if zebra:
        for index in range(2, len(rows), 2):
            style.append(("BACKGROUND", (0, index), (-1, index), colors.HexColor("#f6f8fa")))
    table.setStyle(TableStyle(style))
    return table


def _count_table(title: str, rows: list[tuple], label: str, width: float) -> list[Any]:
    body = [[label, "events"]] + [[_esc(name) if name else "—", f"{count:,}"] for name, count in rows[:40]]
    if len(rows) > 40:
        body.append([f"… {len(rows) - 40} more", f"{sum(c for _, c in rows[40:]):,}"])
    if not rows:
        body.append(["no events", "0"])
    table = _table(body, [width * 0.72, width * 0.28])
    table.setStyle(TableStyle([("ALIGN", (1, 0), (1, -1), "RIGHT")]))
    return [Paragraph(title, H2), table]


def _per_day_chart(per_day: list[tuple], since: date | None, until: date | None) -> Drawing:
    """Bars of events and applied changes per day (per week beyond two months), with a legend."""
    days: OrderedDict[date, list[int]] = OrderedDict()
    if per_day:
        first = since or per_day[0][0]
        last = until or per_day[-1][0]
        if (last - first).days <= 62:
            cursor = first
            while cursor <= last:
                days[cursor] = [0, 0]
                cursor += timedelta(days=1)
    prefilled = bool(days)
    for day, total, changes in per_day:
        if prefilled and day not in days:
            continue
        entry = days.setdefault(day, [0, 0])
        entry[0] += total
        entry[1] += changes
    if len(days) > 62:  # fold into ISO weeks so the bars stay readable
        weekly: OrderedDict[date, list[int]] = OrderedDict()
        for day, (total, changes) in days.items():
            monday = day - timedelta(days=day.weekday())
            weekly.setdefault(monday, [0, 0])
            weekly[monday][0] += total
            weekly[monday][1] += changes
        days = weekly
    drawing = Drawing(CONTENT_WIDTH, 190)
    if not days:
        drawing.add(String(0, 90, "No events in this period.", fontName="Helvetica", fontSize=9, fillColor=MUTED))
        return drawing
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 36, 40, CONTENT_WIDTH - 50, 125
    chart.data = [[v[0] for v in days.values()], [v[1] for v in days.values()]]
    labels = [d.strftime("%m-%d") for d in days]
    step = max(1, len(labels) // 16)
    chart.categoryAxis.categoryNames = [label if i % step == 0 else "" for i, label in enumerate(labels)]
    chart.categoryAxis.labels.angle = 45
    chart.categoryAxis.labels.boxAnchor = "ne"
    chart.categoryAxis.labels.fontSize = 6.5
    chart.valueAxis.valueMin = 0
    top = max(1, max(v[0] for v in days.values()))
    magnitude = 10 ** (len(str(top)) - 1)
    chart.valueAxis.valueMax = -(-top // magnitude) * magnitude  # the next round number above the tallest bar
    chart.valueAxis.valueStep = max(1, chart.valueAxis.valueMax // 5)
    chart.valueAxis.labels.fontSize = 7
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = RULE
    chart.bars[0].fillColor = colors.HexColor("#8c959f")
    chart.bars[1].fillColor = ACCENT
    chart.bars.strokeColor = None
    chart.groupSpacing = 2
    drawing.add(chart)
    legend = Legend()
    legend.x, legend.y = 40, 185
    legend.fontSize = 7.5
    legend.alignment = "right"
    legend.columnMaximum = 1
    legend.deltax = 110
    legend.dx = legend.dy = 7
    legend.colorNamePairs = [(colors.HexColor("#8c959f"), "all events"), (ACCENT, "changes applied")]
    drawing.add(legend)
    return drawing


def _risk_chart(by_risk: list[tuple]) -> Drawing:
    counts = {risk: 0 for risk in ("low", "medium", "high")}
    for risk, count in by_risk:
        counts[risk] = counts.get(risk, 0) + count
    drawing = Drawing(CONTENT_WIDTH, 90)
    chart = HorizontalBarChart()
    chart.x, chart.y, chart.width, chart.height = 60, 10, CONTENT_WIDTH - 120, 72
    chart.data = [list(counts.values())]
    chart.categoryAxis.categoryNames = [f"{risk} ({count})" for risk, count in counts.items()]
    chart.categoryAxis.labels.fontSize = 8
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max(1, max(counts.values()))
    chart.valueAxis.valueStep = max(1, -(-chart.valueAxis.valueMax // 5))
    chart.valueAxis.labels.fontSize = 7
    chart.bars.strokeColor = None
    for index, risk in enumerate(counts):
        chart.bars[(0, index)].fillColor = RISK_COLOURS.get(risk, MUTED)
    drawing.add(chart)
    return drawing


def _target(request: ChangeRequest) -> str:
    payload = request.payload or {}
    if request.type in ("grant", "revoke"):
        tables = payload.get("tables")
        scope = "all tables" if tables == "all" else ", ".join(tables or []) or "schema"
        return (f"{' '.join(payload.get('privileges', []))} on {payload.get('database', '')}."
                f"{payload.get('schema', '')} ({scope}) to {payload.get('role', '')}")
    if request.type == "role":
        return f"role {payload.get('name', '')}" + (" (login)" if payload.get("login") else "")
    if request.type == "schema":
        return f"schema {payload.get('database', '')}.{payload.get('name', '')}"
    if request.type == "ddl":
        return f"DDL on {payload.get('database', '')}.{payload.get('schema', '')}"
    return f"{request.type} {payload.get('name', '')}"


def _changes_table(request_ids: list[int]) -> list[Any]:
    requests = (ChangeRequest.objects.filter(pk__in=request_ids).select_related("team", "instance", "requester")
                .prefetch_related("approvals__reviewer").order_by("pk"))
    rows: list[list[Any]] = [["#", "type", "instance · team", "change", "requester", "approvers", "submitted",
                              "approved", "applied", "status"]]
    for request in requests.iterator(chunk_size=500):
        approvers = [a.reviewer.username for a in request.approvals.all()
                     if a.decision == "approve" and a.plan_hash == request.plan_hash]
        rows.append([
            Paragraph(f"<b>#{request.pk}</b>", CELL), Paragraph(_esc(request.type), CELL),
            Paragraph(f"{_esc(request.instance.name)} · {_esc(request.team.name)}", CELL),
            Paragraph(_esc(_target(request)), CELL),
            Paragraph(_esc(request.requester.username if request.requester_id else "system"), CELL),
            Paragraph(_esc(", ".join(approvers) or "—"), CELL),
            Paragraph(_when(request.created_at), CELL), Paragraph(_when(request.approved_at), CELL),
            Paragraph(_when(request.applied_at), CELL), Paragraph(_esc(request.status), CELL),
        ])
    if len(rows) == 1:
        return [Paragraph("No change requests have events in this period.", BODY)]
    w = CONTENT_WIDTH
    return [_table(rows, [w * 0.06, w * 0.06, w * 0.11, w * 0.21, w * 0.08, w * 0.09, w * 0.09, w * 0.09, w * 0.09,
                          w * 0.12])]


def _entitlements_table(at: datetime, entitlements_at: EntitlementsAt) -> list[Any]:
    report = entitlements_at(at)
    rows: list[list[Any]] = [["instance", "database.schema", "role", "privileges", "on", "request", "approvers",
                              "expires"]]
    for row in report.rows:
        scope = row.tables if isinstance(row.tables, str) else ", ".join(row.tables)
        rows.append([
            Paragraph(_esc(row.instance), CELL), Paragraph(_esc(f"{row.database}.{row.schema}"), CELL),
            Paragraph(f"<b>{_esc(row.role)}</b>", CELL),
            Paragraph(_esc(" ".join(row.privileges)) + (" <font color='#cf222e'>(unexplained)</font>"
                                                         if row.unexplained else ""), CELL),
            Paragraph(_esc(f"{row.kind} {scope}".strip()), CELL),
            Paragraph(f"#{row.request_id}" if row.request_id else "—", CELL),
            Paragraph(_esc(", ".join(row.approvers) or "—"), CELL), Paragraph(_when(row.expires_at), CELL),
        ])
    if len(rows) == 1:
        return [Paragraph("The portal records no access at the end of this period.", BODY)]
    w = CONTENT_WIDTH
    return [_table(rows, [w * 0.1, w * 0.17, w * 0.13, w * 0.17, w * 0.15, w * 0.08, w * 0.1, w * 0.1])]


def _campaigns_table(filters: AuditFilters) -> list[Any]:
    """Access review campaigns active in the period (opened before its end, not closed before its
    start), with their completion and revocations (issue #18; each campaign's own report has the items)."""
    campaigns = AccessReviewCampaign.objects.select_related("opened_by").annotate(
        item_count=Count("items"), decided=Count("items", filter=~Q(items__decision="")),
        revoked=Count("items", filter=Q(items__decision="revoke")),
        applied=Count("items", filter=Q(items__revoke_request__status="applied")))
    if filters.until is not None:
        campaigns = campaigns.filter(opened_at__lt=filters.until)
    if filters.since is not None:
        campaigns = campaigns.filter(Q(closed_at__isnull=True) | Q(closed_at__gte=filters.since))
    rows: list[list[Any]] = [["#", "campaign", "opened by", "opened", "deadline", "status", "decided", "revoked",
                              "applied"]]
    for c in campaigns.order_by("opened_at", "pk")[:500]:
        completion = f"{c.decided}/{c.item_count} ({round(100 * c.decided / c.item_count, 1) if c.item_count else 100.0}%)"
        rows.append([Paragraph(f"<b>#{c.pk}</b>", CELL), Paragraph(_esc(c.name), CELL),
                     Paragraph(_esc(c.opened_by.username), CELL), Paragraph(_when(c.opened_at), CELL),
                     Paragraph(_when(c.deadline), CELL), Paragraph(_esc(c.status), CELL), Paragraph(completion, CELL),
                     Paragraph(str(c.revoked), CELL), Paragraph(str(c.applied), CELL)])
    if len(rows) == 1:
        return [Paragraph("No access review campaign was open in this period.", BODY)]
    w = CONTENT_WIDTH
    return [_table(rows, [w * 0.06, w * 0.25, w * 0.1, w * 0.1, w * 0.1, w * 0.08, w * 0.13, w * 0.09, w * 0.09])]


def build_report(*, filters: AuditFilters, author: Any, entitlements_at: EntitlementsAt,
                 now: datetime | None = None) -> Any:
    """Write the report to a temporary file and return it open at its start (for FileResponse).

    `entitlements_at(moment)` gives the closing section's rows (portal.selectors.entitlements):
    audit reads no provisioning module itself, so its caller hands the reader in.
    """
    now = now or timezone.now()
    verification = verify_chain()
    counts = _counts(filters)
    end = filters.until or now
    period = period_text(filters, now)
    author_name = (getattr(author, "get_full_name", lambda: "")() or getattr(author, "username", str(author)))
    total_events = sum(count for _, count in counts["action"])

    def decorate(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(MUTED)
        canvas.drawString(MARGIN, 10 * mm, f"dbportal audit report · {period}")
        canvas.drawRightString(PAGE_WIDTH - MARGIN, 10 * mm, f"page {doc.page}")
        canvas.setStrokeColor(RULE)
        canvas.line(MARGIN, 12.5 * mm, PAGE_WIDTH - MARGIN, 12.5 * mm)
        canvas.restoreState()

    story: list[Any] = [Spacer(1, 30 * mm), Paragraph("Audit compliance report", TITLE),
                        Paragraph("dbportal — PostgreSQL self-service portal", BODY), Spacer(1, 10 * mm)]
    filters_text = ", ".join(f"{k}={v}" for k, v in filters.as_dict().items() if k not in ("since", "until")) or "none"
    if verification.ok:
        verdict = "<font color='#1a7f37'><b>VERIFIED</b></font> — every link of the chain recomputes"
    else:
        verdict = (f"<font color='#cf222e'><b>BROKEN at seq {verification.first_broken_seq}</b></font> — "
                   f"{_esc(verification.problem)}")
    cover = [
        ["Period", Paragraph(_esc(period), BODY)],
        ["Filters", Paragraph(_esc(filters_text), BODY)],
        ["Author", Paragraph(_esc(author_name), BODY)],
        ["Generated", Paragraph(format_ts(now), BODY)],
        ["Events in period", Paragraph(f"{total_events:,}", BODY)],
        ["Chain verification", Paragraph(verdict, BODY)],
        ["Events verified", Paragraph(f"{verification.events:,} (head seq {verification.head_seq:,})", BODY)],
        ["Head hash", Paragraph(_esc(verification.head_hash), MONO)],
    ]
    cover_table = _table(cover, [40 * mm, CONTENT_WIDTH - 40 * mm], header=False, zebra=False)
    cover_table.setStyle(TableStyle([("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9),
                                     ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
    story += [cover_table, Spacer(1, 8 * mm), Paragraph(
        "The audit log is append-only (database triggers reject UPDATE, DELETE and TRUNCATE) and hash-chained: each "
        "event's hash is an HMAC-SHA256, under a key held outside the portal database, over the event with its "
        "previous event's hash, so a changed, removed or inserted event breaks the chain at its seq, and signed "
        "checkpoints kept outside the database bound any rewrite. Holders of the key can recompute every hash from "
        "the JSON Lines export (docs/audit.md, \"The canonical form\").", SMALL), PageBreak()]

    story += [Paragraph("Summary", H1)]
    half = CONTENT_WIDTH / 2 - 4 * mm
    story.append(Table([[_count_table("Events by instance", counts["instance"], "instance", half),
                         _count_table("Events by team", [(t or "no team", c) for t, c in counts["team"]], "team",
                                      half)]],
                       colWidths=[half + 8 * mm, half], hAlign="LEFT", style=[("VALIGN", (0, 0), (-1, -1), "TOP"),
                                                                               ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    story.append(KeepTogether(_count_table("Events by action", counts["action"], "action", CONTENT_WIDTH * 0.6)))
    story += [Paragraph("Events and changes per day", H2),
              _per_day_chart(counts["per_day"], filters.since.date() if filters.since else None,
                             (filters.until - timedelta(microseconds=1)).date() if filters.until else None),
              Paragraph("Changes applied by risk", H2), _risk_chart(counts["risk"]), PageBreak()]

    story += [Paragraph("Changes in the period", H1), Paragraph(
        "Every request with an event in the period — grants, revokes, roles, schemas and DDL changes — with who "
        "asked, who approved the plan that ran, and when.", SMALL), Spacer(1, 3 * mm)]
    story += _changes_table(counts["requests"])
    story += [Spacer(1, 6 * mm), Paragraph("Access review campaigns", H1), Paragraph(
        "Periodic recertification campaigns open during the period: how many privileges their certifiers decided, "
        "how many were revoked and how many of those revocations the engine applied. Each campaign's own report "
        "(CSV, PDF) lists every decision with its comment.", SMALL), Spacer(1, 3 * mm)]
    story += _campaigns_table(filters)
    story += [PageBreak(), Paragraph(f"Entitlements at the end of the period ({end.strftime('%Y-%m-%d %H:%M')} UTC)", H1), Paragraph(
        "What the portal's records say each role could access at that moment (reconstructed from grants, their "
        "revocations and expiries, managed schemas, and drift findings open then).", SMALL), Spacer(1, 3 * mm)]
    story += _entitlements_table(end, entitlements_at)

    handle = tempfile.TemporaryFile(suffix=".pdf")
    doc = SimpleDocTemplate(handle, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                            bottomMargin=18 * mm, title="Audit compliance report", author=author_name,
                            subject=f"dbportal audit {period}", creator="dbportal")
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)
    handle.seek(0)
    return handle
