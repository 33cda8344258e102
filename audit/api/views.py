"""Audit API views: thin; parsing in audit.selectors, writes in audit.services (the entitlements are
portal/api/entitlements.py)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.permissions import IsAuditorOrAdmin
from audit.api.serializers import AuditEventOutput, AuditEventPageOutput, VerifyOutput
from audit.archive_reads import archived_event_get, export_with_archives
from audit.exports.pdf import EntitlementsAt, build_report
from audit.exports.stream import CONTENT_TYPES, filename
from audit.selectors import event_get, event_page, parse_filters, parse_seq
from audit.services import audit_access_record, audit_export_record, audit_verify
from portal.api.filters import NUL_FREE
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
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="log",
                            parameters=request.query_params)
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
        event = event_get(seq) or archived_event_get(seq)  # a detached month's event from its archive
        if event is None:
            raise NotFound("no event with this seq")
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="event", object_id=seq)
        return Response(AuditEventOutput(event).data)


class AuditVerifyView(APIView):
    """Recompute the keyed chain (streaming), check it against the signed checkpoints and name the first
    broken seq. Itself audited. Auditors and platform admins."""

    permission_classes = [IsAuditorOrAdmin]

    @extend_schema(
        parameters=[OpenApiParameter("incremental", str, enum=["true", "false"],
                                     description="start after the newest checkpoint that still matches (default false)")],
        responses={200: VerifyOutput},
    )
    def get(self, request):
        incremental = request.query_params.get("incremental", "false")
        if incremental not in ("true", "false"):
            raise InvalidPayload.field("incremental", "must be true or false")
        result = audit_verify(actor=request.user, actor_ip=client_ip(request), incremental=incremental == "true")
        return Response(VerifyOutput(result.as_dict()).data)


class AuditExportView(APIView):
    """CSV and JSON Lines stream from PostgreSQL; the PDF is the compliance report of the period."""

    permission_classes = [IsAuditorOrAdmin]
    content_negotiation_class = IgnoreFormatNegotiation
    # The PDF closes with the entitlements at the end of the period. They are read from the
    # portal's records and provisioning's drift findings, which audit does not import: the URL
    # conf that routes here (portal/api/urls.py) passes the reader in through as_view().
    entitlements_at: EntitlementsAt | None = None

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
            if self.entitlements_at is None:
                raise ImproperlyConfigured("route AuditExportView with as_view(entitlements_at=...)")
            handle = build_report(filters=filters, author=request.user, entitlements_at=self.entitlements_at)
            return FileResponse(handle, as_attachment=True, filename=name, content_type=CONTENT_TYPES["pdf"])
        # A period that reaches into detached months takes their events from the archive files first.
        response = StreamingHttpResponse(export_with_archives(filters, export_format),
                                         content_type=CONTENT_TYPES[export_format])
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response
