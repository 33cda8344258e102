"""/api/v1/break-glass/: emergency grants applied before review, and their post-hoc review.

- POST /break-glass/: file one (a requester of the owning team, where the environment allows
  it; see portal/services/breakglass.py for every refusal). 201 with the request, already queued.
- GET /break-glass/ (?pending=true|false), GET /break-glass/{request id}/: the break-glass
  records of the requests the caller may see (reviewers, auditors and admins: all).
- POST /break-glass/{request id}/review/: a reviewer or admin other than the requester
  acknowledges it or flags misuse, with a comment.
- GET /break-glass/settings/: every signed-in user (whether they can break the glass where);
  POST /break-glass/settings/: platform admins switch an environment on or off.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from portal.api.requests import BreakGlassReviewOutput, IdOrNameField, RequestDetailOutput
from portal.api.schema import error_responses
from portal.choices import BreakGlassOutcome, Environment, RequestType
from portal.models import Instance, Team
from portal.selectors.breakglass import break_glass_list_for
from portal.selectors.requests import request_history_load
from portal.services.auth import client_ip
from portal.services.breakglass import (
    break_glass_review,
    break_glass_setting_update,
    break_glass_settings,
    break_glass_submit,
)


class BreakGlassInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=RequestType.choices, default=RequestType.GRANT,
                                   help_text="only `grant`: anything else is refused")
    instance = IdOrNameField(Instance)
    team = IdOrNameField(Team)
    justification = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    incident_ref = serializers.CharField(max_length=40, required=False, allow_blank=True, default="",
                                         help_text="the incident, e.g. INC-1234 or a PagerDuty id P1A2B3C")
    duration_minutes = serializers.IntegerField(help_text="how long the grant lasts (at most "
                                                          "PORTAL_BREAK_GLASS_MAX_HOURS; 4 hours by default)")
    payload = serializers.JSONField(help_text="a grant's payload: role, database, schema, privileges "
                                              "(USAGE, SELECT, INSERT, UPDATE, DELETE), tables")


class BreakGlassReviewInput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=BreakGlassOutcome.choices)
    comment = serializers.CharField(max_length=5000)


class BreakGlassListOutput(BreakGlassReviewOutput):
    request = serializers.IntegerField(source="request_id")
    instance = serializers.CharField(source="request.instance.name")
    environment = serializers.CharField(source="request.instance.environment")
    team = serializers.CharField(source="request.team.name")
    requester = serializers.CharField(source="request.requester.username", allow_null=True)
    status = serializers.CharField(source="request.status")

    class Meta(BreakGlassReviewOutput.Meta):
        fields = ["request", "instance", "environment", "team", "requester", "status",
                  *BreakGlassReviewOutput.Meta.fields]
        read_only_fields = fields


class SettingOutput(serializers.Serializer):
    environment = serializers.ChoiceField(choices=Environment.choices)
    enabled = serializers.BooleanField()
    default = serializers.BooleanField(help_text="no admin has set it: the built-in default (prod off)")
    updated_by = serializers.CharField(allow_blank=True)
    updated_at = serializers.DateTimeField(allow_null=True)


class SettingInput(serializers.Serializer):
    environment = serializers.ChoiceField(choices=Environment.choices)
    enabled = serializers.BooleanField()


class BreakGlassViewSet(viewsets.GenericViewSet):
    serializer_class = BreakGlassListOutput
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        rows = break_glass_list_for(self.request.user)
        if self.action != "list" or "pending" not in self.request.query_params:
            return rows
        pending = self.request.query_params.get("pending")
        if pending not in ("true", "false"):
            raise serializers.ValidationError({"pending": ["true or false"]})
        return rows.filter(reviewed_at__isnull=pending == "true")

    def _one(self, pk):
        found = break_glass_list_for(self.request.user).filter(request_id=pk).first()
        if found is None:
            raise NotFound("no break-glass request with that id that you can see")
        return found

    @extend_schema(parameters=[OpenApiParameter("pending", bool, description="only unreviewed (true) or "
                                                "reviewed (false)")], responses={200: BreakGlassListOutput(many=True)})
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(BreakGlassListOutput(page, many=True).data)

    @extend_schema(responses={200: BreakGlassListOutput})
    def retrieve(self, request, pk=None):
        return Response(BreakGlassListOutput(self._one(pk)).data)

    @extend_schema(request=BreakGlassInput, responses={201: RequestDetailOutput},
                   description="File a break-glass grant: applied at once, without approval, for an incident; "
                               "reviewed after the fact.")
    def create(self, request):
        data = BreakGlassInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        created = break_glass_submit(user=request.user, actor_ip=client_ip(request), **data.validated_data)
        return Response(RequestDetailOutput(request_history_load(created, new=True),
                                            context={"request": request}).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BreakGlassReviewInput, responses={200: BreakGlassListOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def review(self, request, pk=None):
        record = self._one(pk)
        data = BreakGlassReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        break_glass_review(request=record.request, reviewer=request.user, actor_ip=client_ip(request),
                           **data.validated_data)
        return Response(BreakGlassListOutput(self._one(pk)).data)

    @extend_schema(request=SettingInput, responses={200: SettingOutput(many=True)})
    @action(detail=False, methods=["get", "post"], url_path="settings", pagination_class=None)
    def switches(self, request):
        if request.method == "POST":
            data = SettingInput(data=request.data)
            data.is_valid(raise_exception=True)
            break_glass_setting_update(actor=request.user, actor_ip=client_ip(request), **data.validated_data)
        return Response(SettingOutput(break_glass_settings(), many=True).data)
