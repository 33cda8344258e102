"""Audit API views: thin; parsing in audit.selectors, writes in audit.services."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.permissions import CanSeeEntitlements, IsAuditorOrAdmin
from audit.api.serializers import (
    AuditEventOutput,
    AuditEventPageOutput,
    EntitlementOutput,
    EntitlementPageOutput,
    VerifyOutput,
)
from audit.entitlements import entitlements_for, instances_for
from audit.exports.stream import CONTENT_TYPES, filename, stream_copy
from audit.selectors import event_get, event_page, parse_filters, parse_moment, parse_seq
from audit.services import audit_export_record, audit_verify
from portal.api.filters import NUL_FREE
from portal.api.pagination import Pagination
from portal.errors import InvalidPayload
from portal.services.auth import client_ip

# The documented shapes are what parse_filters accepts (the API fuzzer holds the two together).
MOMENT = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
FILTER_PARAMETERS = [
    OpenApiParameter("since", MOMENT, description="ISO 8601 date or date-time (UTC when naive), inclusive"),
    OpenApiParameter("until", MOMENT, description="ISO 8601 date (that whole day included) or date-time, exclusive;"
                                                  " after since"),
    OpenApiParameter("action", {"type": "string", "pattern": r"^[a-z0-9_.-]{1,62}\*?$"},
                     description="exact action (request.approved) or a prefix (request.*)"),
    OpenApiParameter("actor", {**NUL_FREE, "maxLength": 150}, description="username, or system"),
    OpenApiParameter("instance", {**NUL_FREE, "maxLength": 63}, description="instance name"),
    OpenApiParameter("request", {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}, description="request id"),
]
PAGE_PARAMETERS = [
    OpenApiParameter("page", {"type": "integer", "minimum": 1}),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": 500}),
]


class IgnoreFormatNegotiation(DefaultContentNegotiation):
    """`?format=` names the export format here, not a DRF renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditEventListView(APIView):
    """The audit log, oldest first, keyset-paginated on seq (`next` carries `after=<last seq>`)."""

    permission_classes = [IsAuditorOrAdmin]

    @extend_schema(
        parameters=FILTER_PARAMETERS + [
            OpenApiParameter("after", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                             description="return events with seq greater than this (keyset cursor)"),
            OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": 500},
                             description="events per page, 1-500 (default 50)"),
        ],
        responses={200: AuditEventPageOutput},
        operation_id="audit_events_list",
    )
    def get(self, request):
        filters = parse_filters(request.query_params)
        after = parse_seq(request.query_params, "after")
        size = parse_seq(request.query_params, "page_size")
        size = 50 if size is None else size
        if not 1 <= size <= 500:
            raise InvalidPayload.field("page_size", "must be from 1 to 500")
        events, cursor = event_page(filters, after=after, limit=size)
        next_url = None
        if cursor is not None:
            params = request.query_params.copy()
            params["after"] = str(cursor)
            next_url = request.build_absolute_uri(request.path + "?" + params.urlencode())
        return Response({"next": next_url, "results": AuditEventOutput(events, many=True).data})


class AuditEventDetailView(APIView):
    permission_classes = [IsAuditorOrAdmin]

    @extend_schema(responses={200: AuditEventOutput})
    def get(self, request, seq: int):
        event = event_get(seq)
        if event is None:
            raise NotFound("no event with this seq")
        return Response(AuditEventOutput(event).data)


class AuditVerifyView(APIView):
    """Recompute the whole chain (streaming) and name the first broken seq. Itself audited."""

    permission_classes = [IsAuditorOrAdmin]

    @extend_schema(responses={200: VerifyOutput})
    def get(self, request):
        result = audit_verify(actor=request.user, actor_ip=client_ip(request))
        return Response(VerifyOutput(result.as_dict()).data)


class AuditExportView(APIView):
    """CSV and JSON Lines stream from PostgreSQL; the PDF is the compliance report of the period."""

    permission_classes = [IsAuditorOrAdmin]
    content_negotiation_class = IgnoreFormatNegotiation

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["csv", "jsonl", "pdf"], description="default csv")]
        + FILTER_PARAMETERS,
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="CSV with a header row"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY, description="one JSON event per line"),
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="compliance report"),
        },
    )
    def get(self, request):
        export_format = request.query_params.get("format", "csv")
        if export_format not in CONTENT_TYPES:
            raise InvalidPayload.field("format", "must be csv, jsonl or pdf")
        filters = parse_filters(request.query_params)
        audit_export_record(actor=request.user, actor_ip=client_ip(request), export_format=export_format,
                            filters=filters.as_dict())
        name = filename(filters, export_format)
        if export_format == "pdf":
            from audit.exports.pdf import build_report

            handle = build_report(filters=filters, author=request.user)
            return FileResponse(handle, as_attachment=True, filename=name, content_type=CONTENT_TYPES["pdf"])
        response = StreamingHttpResponse(stream_copy(filters, export_format), content_type=CONTENT_TYPES[export_format])
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response


ENTITLEMENT_CSV_COLUMNS = ["instance", "database", "schema", "role", "kind", "privileges", "tables", "source",
                           "request_id", "request_type", "requester", "approvers", "granted_at", "expires_at",
                           "member_of", "unexplained"]


def entitlement_csv(rows: list) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(ENTITLEMENT_CSV_COLUMNS)
    for row in rows:
        data = row.as_dict()
        writer.writerow([
            data["instance"], data["database"], data["schema"], data["role"], data["kind"], " ".join(data["privileges"]),
            data["tables"] if isinstance(data["tables"], str) else " ".join(data["tables"]), data["source"],
            data["request_id"] or "", data["request_type"], data["requester"], " ".join(data["approvers"]),
            data["granted_at"].isoformat() if data["granted_at"] else "",
            data["expires_at"].isoformat() if data["expires_at"] else "",
            " ".join(data["member_of"]), "yes" if data["unexplained"] else "no",
        ])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


class EntitlementView(APIView):
    """Who can access what: live from the clusters' catalogs, or `at` a past date from the records."""

    permission_classes = [CanSeeEntitlements]
    content_negotiation_class = IgnoreFormatNegotiation

    @extend_schema(
        parameters=[
            OpenApiParameter("instance", str, description="instance name (default: every instance)"),
            OpenApiParameter("role", str), OpenApiParameter("schema", str),
            OpenApiParameter("at", MOMENT, description="ISO 8601 date (end of that day) or date-time; default: live"),
            OpenApiParameter("format", str, enum=["json", "csv"], description="csv: a download of every row"),
            *PAGE_PARAMETERS,
        ],
        responses={
            (200, "application/json"): EntitlementPageOutput,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="every row as CSV"),
        },
    )
    def get(self, request):
        params = request.query_params
        export_format = params.get("format", "json")
        if export_format not in ("json", "csv"):
            raise InvalidPayload.field("format", "must be json or csv")
        instances = instances_for(params.get("instance", ""))
        if params.get("instance") and not instances:
            raise InvalidPayload.field("instance", "no instance with this name")
        at = parse_moment("at", params["at"], end_of_day=True) if params.get("at") else None
        report = entitlements_for(instances=instances, at=at, role=params.get("role", "").strip(),
                                  schema=params.get("schema", "").strip())
        if export_format == "csv":
            # Refused, not ignored: the CSV holds every row (the API fuzzer flagged the silent accept).
            for name in ("page", "page_size"):
                if name in params:
                    raise InvalidPayload.field(name, "does not apply to format=csv, which holds every row")
            label = (at.date().isoformat() if at else report.as_of.date().isoformat())
            response = StreamingHttpResponse(entitlement_csv(report.rows), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="entitlements_{label}.csv"'
            return response
        paginator = Pagination()
        page = paginator.paginate_queryset(report.rows, request, view=self)
        data = {
            "count": paginator.page.paginator.count,
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
            "mode": report.mode,
            "as_of": report.as_of,
            "unreachable": report.unreachable,
            "results": [EntitlementOutput(row.as_dict()).data for row in page],
        }
        return Response(EntitlementPageOutput(data).data)
