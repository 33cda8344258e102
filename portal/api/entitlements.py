"""/api/v1/entitlements/: who can access what, live from the clusters' catalogs or as of a past date.

For auditors, reviewers (who act on unexplained privileges) and platform admins. The rows come
from portal.selectors.entitlements; this module parses the query, pages or streams them as CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.views import MOMENT, PAGE_PARAMETERS, IgnoreFormatNegotiation
from audit.selectors import parse_moment
from audit.services import audit_access_record
from portal.api.filters import NUL_FREE
from portal.api.pagination import Pagination
from portal.api.permissions import CanSeeEntitlements
from portal.errors import InvalidPayload
from portal.selectors.entitlements import Entitlement, entitlements_for, instances_for
from portal.services.auth import client_ip


class EntitlementOutput(serializers.Serializer):
    instance = serializers.CharField()
    database = serializers.CharField()
    schema = serializers.CharField()
    role = serializers.CharField()
    kind = serializers.ChoiceField(choices=["superuser", "owner", "schema", "tables", "sequences", "default"])
    privileges = serializers.ListField(child=serializers.CharField())
    tables = serializers.JSONField(help_text='"all", a list of table names, or "" where it does not apply')
    source = serializers.CharField(help_text="grant | owner | admin | builtin | outside | drift, empty when unexplained")
    request_id = serializers.IntegerField(allow_null=True)
    request_type = serializers.CharField()
    requester = serializers.CharField()
    approvers = serializers.ListField(child=serializers.CharField())
    granted_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    member_of = serializers.ListField(child=serializers.CharField())
    unexplained = serializers.BooleanField()


class EntitlementPageOutput(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    mode = serializers.ChoiceField(choices=["live", "at"])
    as_of = serializers.DateTimeField()
    unreachable = serializers.DictField(child=serializers.CharField())
    results = EntitlementOutput(many=True)




ENTITLEMENT_CSV_COLUMNS = ["instance", "database", "schema", "role", "kind", "privileges", "tables", "source",
                           "request_id", "request_type", "requester", "approvers", "granted_at", "expires_at",
                           "member_of", "unexplained"]


def entitlement_csv(rows: list[Entitlement]) -> Iterator[str]:
    """The rows as CSV, one chunk per row (the download streams)."""
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
            OpenApiParameter("instance", {**NUL_FREE, "maxLength": 63},
                             description="instance id or name (default: every instance)"),
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
            raise InvalidPayload.field("instance", "no instance with this id or name")
        at = parse_moment("at", params["at"], end_of_day=True) if params.get("at") else None
        report = entitlements_for(instances=instances, at=at, role=params.get("role", "").strip(),
                                  schema=params.get("schema", "").strip())
        audit_access_record(actor=request.user, actor_ip=client_ip(request), view="entitlements", parameters=params)
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
