"""/api/v1/instances/{id}/dictionary/…, /api/v1/dictionary/search/: the data dictionary (issue #21).

Any signed-in user reads the structure of every managed database, exports it (Markdown, CSV,
JSON) and searches across instances; figures and index hints are scoped to the caller's teams'
schemas unless they are a reviewer, auditor or admin (portal/selectors/dictionary.py). Editing a
comment files a `ddl` request for the team owning the schema (members of that team only: 403
otherwise); it is reviewed and applied like any other DDL request.
"""

from __future__ import annotations

import re

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.errors import InvalidPayload
from portal.models import Instance
from portal.selectors.dictionary import (
    EXPORTS,
    dictionary_for,
    dictionary_history,
    dictionary_search,
    index_hints,
    latest_snapshots,
)
from portal.selectors.instances import instance_get_for, instance_list_for
from portal.services.auth import client_ip
from portal.services.dictionary import MAX_COMMENT, dictionary_comment_request

MAX_QUERY = 100


class DatabaseOutput(serializers.Serializer):
    database = serializers.CharField()
    taken_at = serializers.DateTimeField(help_text="when this structure was first seen")
    checked_at = serializers.DateTimeField(help_text="when the catalog was last read")


class DatabaseListOutput(serializers.Serializer):
    results = DatabaseOutput(many=True)


class DictionaryOutput(serializers.Serializer):
    instance = serializers.CharField()
    database = serializers.CharField()
    taken_at = serializers.DateTimeField()
    checked_at = serializers.DateTimeField()
    schemas = serializers.ListField(child=serializers.JSONField(),
                                    help_text="name, owner, comment, team, figures (bool), tables: name, kind, owner, "
                                              "comment, rows_estimate, total_bytes, seq_scan, idx_scan, columns, "
                                              "constraints, indexes")


class HistoryOutput(serializers.Serializer):
    results = serializers.ListField(child=serializers.JSONField(),
                                    help_text="taken_at and changes: action, object, schema, table, name, before, "
                                              "after, request_id, source ('request #N' or 'outside the portal')")


class HintsOutput(serializers.Serializer):
    results = serializers.ListField(child=serializers.JSONField())


class SearchOutput(serializers.Serializer):
    results = serializers.ListField(child=serializers.JSONField(),
                                    help_text="instance, database, schema, team, kind, table, column, comment")


class CommentInput(serializers.Serializer):
    schema = serializers.CharField(max_length=63)
    table = serializers.CharField(max_length=63)
    column = serializers.CharField(max_length=63, required=False, allow_null=True, default=None)
    comment = serializers.CharField(max_length=MAX_COMMENT, allow_blank=True, trim_whitespace=False,
                                    help_text="the new comment; empty removes it")
    justification = serializers.CharField(max_length=2000)


class CommentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    plan = serializers.JSONField()
    plan_hash = serializers.CharField()
    risk = serializers.CharField()


def _database(instance: Instance, database: str) -> str:
    if not re.fullmatch(r"[^\x00]{1,63}", database):
        raise InvalidPayload.field("database", "a database name of 1 to 63 characters")
    return database


class DictionaryDatabasesView(APIView):
    @extend_schema(responses={200: DatabaseListOutput}, operation_id="instances_dictionary_list")
    def get(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        rows = [{"database": s.database, "taken_at": s.taken_at, "checked_at": s.checked_at}
                for s in latest_snapshots(instance)]
        return Response({"results": DatabaseOutput(rows, many=True).data})


class DictionaryView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("export", OpenApiTypes.STR, enum=sorted(EXPORTS),
                                     description="a file to download instead of the JSON answer")],
        responses={200: DictionaryOutput, (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR),
                   (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR)},
        operation_id="instances_dictionary_retrieve")
    def get(self, request, pk: int, database: str):
        instance = instance_get_for(request.user, pk)
        view = dictionary_for(request.user, instance, _database(instance, database))
        export = request.query_params.get("export")
        if export is None:
            return Response(DictionaryOutput(view).data)
        if export not in EXPORTS:
            raise InvalidPayload.field("export", f"one of {', '.join(sorted(EXPORTS))}")
        content_type, extension, render = EXPORTS[export]
        response = HttpResponse(render(view), content_type=content_type)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{instance.name}-{database}")
        response["Content-Disposition"] = f'attachment; filename="dictionary-{safe}.{extension}"'
        return response


class DictionaryHistoryView(APIView):
    @extend_schema(responses={200: HistoryOutput}, operation_id="instances_dictionary_history")
    def get(self, request, pk: int, database: str):
        instance = instance_get_for(request.user, pk)
        return Response({"results": HistoryOutput({"results": dictionary_history(
            instance, _database(instance, database))}).data["results"]})


class DictionaryHintsView(APIView):
    @extend_schema(responses={200: HintsOutput}, operation_id="instances_dictionary_hints")
    def get(self, request, pk: int, database: str):
        instance = instance_get_for(request.user, pk)
        view = dictionary_for(request.user, instance, _database(instance, database))
        return Response({"results": index_hints(view)})


class DictionaryCommentView(APIView):
    @extend_schema(request=CommentInput, responses={201: CommentOutput}, operation_id="instances_dictionary_comment")
    def post(self, request, pk: int, database: str):
        instance = instance_get_for(request.user, pk)
        data = CommentInput(data=request.data)
        data.is_valid(raise_exception=True)
        change = dictionary_comment_request(user=request.user, actor_ip=client_ip(request), instance=instance,
                                            database=_database(instance, database), **data.validated_data)
        return Response(CommentOutput(change).data, status=status.HTTP_201_CREATED)


class DictionarySearchView(APIView):
    @extend_schema(parameters=[OpenApiParameter("q", OpenApiTypes.STR, required=True,
                                                description=f"2 to {MAX_QUERY} characters")],
                   responses={200: SearchOutput}, operation_id="dictionary_search")
    def get(self, request):
        query = request.query_params.get("q", "").strip()
        if not 2 <= len(query) <= MAX_QUERY or "\x00" in query:
            raise InvalidPayload.field("q", f"2 to {MAX_QUERY} characters")
        return Response({"results": dictionary_search(request.user, query, instances=instance_list_for(request.user))})
