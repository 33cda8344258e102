"""/api/v1/access/: what the caller's teams hold, per instance (the CLI's `dbportal access` and the
live side of access-as-code).

Anyone signed in, for their own teams only (even reviewers and admins: it is *my* access); the
optional `team` and `instance` filters narrow it and never widen it. Roles and grants are the
portal's record of what it applied and has not removed (drift scans keep it honest).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.selectors.desired_state import live_state_for


class SchemaHeld(serializers.Serializer):
    instance = serializers.CharField()
    team = serializers.CharField()
    database = serializers.CharField()
    name = serializers.CharField()
    owner_role = serializers.CharField()
    request_id = serializers.IntegerField(allow_null=True)


class RoleHeld(serializers.Serializer):
    instance = serializers.CharField()
    team = serializers.CharField()
    name = serializers.CharField()
    login = serializers.BooleanField()
    member_of = serializers.ListField(child=serializers.CharField())
    request_id = serializers.IntegerField(allow_null=True)


class GrantHeld(serializers.Serializer):
    instance = serializers.CharField()
    team = serializers.CharField()
    role = serializers.CharField()
    database = serializers.CharField()
    schema = serializers.CharField()
    privileges = serializers.ListField(child=serializers.CharField())
    tables = serializers.JSONField(help_text='"all" or a list of table names')
    default_privileges = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)
    request_id = serializers.IntegerField(allow_null=True)


class AccessOutput(serializers.Serializer):
    teams = serializers.ListField(child=serializers.CharField())
    schemas = SchemaHeld(many=True)
    roles = RoleHeld(many=True)
    grants = GrantHeld(many=True)


class AccessView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("team", OpenApiTypes.STR, description="a team of the caller, by id or name"),
                    OpenApiParameter("instance", OpenApiTypes.STR, description="an instance, by id or name")],
        responses={200: AccessOutput},
        description="What the caller's teams hold today: schemas, roles and grants, per instance.")
    def get(self, request):
        state = live_state_for(request.user, team=request.query_params.get("team"),
                               instance=request.query_params.get("instance"))
        return Response(AccessOutput(state).data)
