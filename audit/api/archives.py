"""The audit archives through the API (read-only): the list of monthly archives, one archived month's
events with the online log's filters and keyset paging, and its CSV / JSON Lines export.

Auditors and platform admins only (IsAuditorOrAdmin); every read is an `audit.viewed` event (view
`archives` or `archive`, the month as object_id, the filters used) and every export `audit.exported`.
Nothing here archives, detaches or deletes: that is beat's job or a platform admin's at the command
line (audit/archive.py, manage.py audit_archive).
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.permissions import IsAuditorOrAdmin
from audit.api.serializers import AuditEventPageOutput
from audit.api.views import FILTER_PARAMETERS, IgnoreFormatNegotiation
from audit.archive_reads import archive_events_page, archive_export_lines, archive_get, archive_list
from audit.exports.stream import CONTENT_TYPES
from audit.models import AuditArchive
from audit.selectors import parse_filters, parse_seq
from audit.services import audit_access_record, audit_export_record
from portal.errors import InvalidPayload
from portal.services.auth import client_ip

PERIOD = OpenApiParameter("period", {"type": "string", "pattern": r"^\d{4}-\d{2}$"}, OpenApiParameter.PATH,
                          description="the archived month, YYYY-MM (UTC)")


class AuditArchiveOutput(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="archived (still online too), detached, or deleted "
                                                             "(after its retention; the manifest stays)")

    class Meta:
        model = AuditArchive
        fields = ["period", "status", "first_seq", "last_seq", "count", "first_ts", "last_ts", "prev_hash",
                  "last_hash", "sha256", "size_bytes", "created_at", "created_by", "retain_until", "detached_at",
                  "deleted_at", "deleted_by"]


class AuditArchiveListOutput(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="always null: every archive fits one page")
    results = AuditArchiveOutput(many=True)


class AuditArchiveListView(APIView):
    """Every monthly archive, newest first, deleted ones included (their manifest outlives the file)."""

    permission_classes = [IsAuditorOrAdmin]

    @extend_schema(responses={200: AuditArchiveListOutput}, operation_id="audit_archives_list")
    def get(self, request):
        archives = archive_list()
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="archives")
        return Response({"next": None, "results": AuditArchiveOutput(archives, many=True).data})


class AuditArchiveEventsView(APIView):
    """One archived month's events, oldest first, with the online log's filters and keyset paging."""

    permission_classes = [IsAuditorOrAdmin]

    @extend_schema(
        parameters=[PERIOD] + FILTER_PARAMETERS + [
            OpenApiParameter("after", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                             description="return events with seq greater than this (keyset cursor)"),
            OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": 500},
                             description="events per page, 1-500 (default 50)"),
        ],
        responses={200: AuditEventPageOutput},
        operation_id="audit_archive_events_list",
    )
    def get(self, request, period: str):
        archive = archive_get(period)
        filters = parse_filters(request.query_params)
        after = parse_seq(request.query_params, "after")
        size = parse_seq(request.query_params, "page_size")
        size = 50 if size is None else size
        if not 1 <= size <= 500:
            raise InvalidPayload.field("page_size", "must be from 1 to 500")
        events, cursor = archive_events_page(archive, filters, after=after, limit=size)
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="archive",
                            parameters=request.query_params, object_id=archive.period)
        next_url = None
        if cursor is not None:
            params = request.query_params.copy()
            params["after"] = str(cursor)
            next_url = request.build_absolute_uri(request.path + "?" + params.urlencode())
        return Response(AuditEventPageOutput({"next": next_url, "results": events}).data)


class AuditArchiveExportView(APIView):
    """An archived month as CSV (the online export's columns) or JSON Lines, streamed from the file."""

    permission_classes = [IsAuditorOrAdmin]
    content_negotiation_class = IgnoreFormatNegotiation

    @extend_schema(
        parameters=[PERIOD, OpenApiParameter("format", str, enum=["csv", "jsonl"], description="default csv")]
        + FILTER_PARAMETERS,
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="CSV with a header row"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY, description="one JSON event per line"),
        },
        operation_id="audit_archive_export",
    )
    def get(self, request, period: str):
        archive = archive_get(period)
        export_format = request.query_params.get("format", "csv")
        if export_format not in ("csv", "jsonl"):
            raise InvalidPayload.field("format", "an archived month exports as csv or jsonl")
        filters = parse_filters(request.query_params)
        lines = archive_export_lines(archive, filters, export_format)
        audit_export_record(actor=request.user, actor_ip=client_ip(request), export_format=export_format,
                            filters={**filters.as_dict(), "archive": archive.period})
        response = StreamingHttpResponse(lines, content_type=CONTENT_TYPES[export_format])
        response["Content-Disposition"] = f'attachment; filename="audit_archive_{archive.period}.{export_format}"'
        response["Cache-Control"] = "no-store"
        return response
