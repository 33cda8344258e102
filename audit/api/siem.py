"""SIEM forwarding state and pause / resume over the API (platform admins only; audit/siem.py).

GET  /api/v1/audit/siem/                  every collector: destination, cursor, head, lag, state, last error
POST /api/v1/audit/siem/{name}/pause/     {reason?}: stop sending to it for now (audit.forwarding_paused)
POST /api/v1/audit/siem/{name}/resume/    send again from the cursor (audit.forwarding_resumed)

Anyone else gets 401 / 403; an unknown collector or one without a cursor yet is a 404. Nobody
can move a cursor or change a destination here: those come from the environment.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.siem import UnknownCollector, collector_statuses, siem_pause, siem_resume
from portal.api.permissions import IsPlatformAdmin
from portal.services.auth import client_ip


class CollectorOutput(serializers.Serializer):
    name = serializers.CharField()
    destination = serializers.CharField(help_text="scheme://host:port, never a path or token")
    configured = serializers.BooleanField()
    state = serializers.ChoiceField(choices=["ok", "failing", "paused", "stopped"])
    last_seq = serializers.IntegerField(help_text="every event up to this seq was acknowledged")
    head_seq = serializers.IntegerField()
    lag = serializers.IntegerField(help_text="events not yet acknowledged")
    last_error = serializers.CharField(allow_blank=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    last_sent_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    failures = serializers.IntegerField()
    paused_by = serializers.CharField(allow_blank=True)


class CollectorListOutput(serializers.Serializer):
    results = CollectorOutput(many=True)


class PauseInput(serializers.Serializer):
    # DRF's CharField refuses NUL characters itself.
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, trim_whitespace=True)


def _status_of(name: str) -> dict:
    for status in collector_statuses():
        if status.name == name:
            return status.as_dict()
    raise NotFound("no such SIEM collector")


class SiemCollectorListView(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses={200: CollectorListOutput})
    def get(self, request):
        results = [status.as_dict() for status in collector_statuses()]
        return Response(CollectorListOutput({"results": results}).data)


class SiemCollectorPauseView(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=PauseInput, responses={200: CollectorOutput})
    def post(self, request, name: str):
        data = PauseInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            siem_pause(name=name, actor=request.user, actor_ip=client_ip(request),
                       reason=data.validated_data.get("reason", ""))
        except UnknownCollector:
            raise NotFound("no such SIEM collector") from None
        return Response(CollectorOutput(_status_of(name)).data)


class SiemCollectorResumeView(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: CollectorOutput})
    def post(self, request, name: str):
        try:
            siem_resume(name=name, actor=request.user, actor_ip=client_ip(request))
        except UnknownCollector:
            raise NotFound("no such SIEM collector") from None
        return Response(CollectorOutput(_status_of(name)).data)
