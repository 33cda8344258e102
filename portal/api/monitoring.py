"""/api/v1/instances/{id}/monitoring/…: an instance's latest figures, their history, alert thresholds.

Who sees what (portal/selectors/monitoring.py): any signed-in user may read an instance's
monitoring (instances are visible to all), scoped: reviewers, auditors and admins see every
figure; anyone else the instance-wide figures and, of the per-object ones, only their own teams'
schemas (tables) and roles (sessions, statements), and no alert detail. Changing a threshold is
a platform admin's act (403 for anyone else), audited as `monitoring.threshold_set`.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.errors import InvalidPayload
from portal.models.monitoring import AlertKind
from portal.personas import is_admin
from portal.selectors.instances import instance_get_for
from portal.selectors.monitoring import (
    CHART_METRICS,
    MAX_SERIES_HOURS,
    monitoring_view_for,
    series_for,
    thresholds_view,
)
from portal.services.auth import client_ip
from portal.services.monitoring import alert_threshold_set


class AlertOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=AlertKind.choices)
    status = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField()
    detail = serializers.CharField(help_text="the sessions involved; reviewers, auditors and admins only")
    opened_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class MonitoringOutput(serializers.Serializer):
    instance = serializers.CharField()
    scope = serializers.ChoiceField(choices=["all", "team"], help_text="team: only the caller's teams' objects")
    taken_at = serializers.DateTimeField(allow_null=True, help_text="the latest successful sample")
    latest_ok = serializers.BooleanField(allow_null=True)
    latest_error = serializers.CharField()
    duration_ms = serializers.FloatField(allow_null=True)
    metrics = serializers.DictField(child=serializers.FloatField(allow_null=True))
    max_connections = serializers.IntegerField(allow_null=True)
    connections = serializers.JSONField()
    sessions = serializers.ListField(child=serializers.JSONField(),
                                     help_text="pid, role, database, application, state, xact_seconds, "
                                               "state_seconds, wait_event_type, blocked_by, blocks")
    tables = serializers.ListField(child=serializers.JSONField(), help_text="biggest first")
    databases = serializers.ListField(child=serializers.JSONField())
    replication = serializers.JSONField()
    statements = serializers.JSONField(help_text='{"available": false, "reason": ...} or {"available": true, "top": [...]}')
    alerts = AlertOutput(many=True)


class SeriesOutput(serializers.Serializer):
    t = serializers.ListField(child=serializers.DateTimeField())
    series = serializers.DictField(child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
                                   help_text=f"one list per figure: {', '.join(CHART_METRICS)}")


class ThresholdOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AlertKind.choices)
    label = serializers.CharField()
    default = serializers.FloatField()
    override = serializers.BooleanField()
    value = serializers.FloatField(allow_null=True, help_text="null: this alert is off for the instance")


class ThresholdListOutput(serializers.Serializer):
    results = ThresholdOutput(many=True)


class ThresholdInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AlertKind.choices)
    value = serializers.FloatField(allow_null=True, required=False, default=None, min_value=0,
                                   help_text="the threshold; null turns the alert off for this instance")
    reset = serializers.BooleanField(required=False, default=False, help_text="back to the default")


class MonitoringView(APIView):
    @extend_schema(responses={200: MonitoringOutput}, operation_id="instances_monitoring_retrieve")
    def get(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        return Response(MonitoringOutput(monitoring_view_for(request.user, instance)).data)


class MonitoringSeriesView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("hours", {"type": "number", "minimum": 1, "maximum": MAX_SERIES_HOURS},
                                     description=f"how far back, in hours (1 to {MAX_SERIES_HOURS})")],
        responses={200: SeriesOutput}, operation_id="instances_monitoring_series_retrieve")
    def get(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        raw = request.query_params.get("hours", "24")
        try:
            hours = float(raw)
        except ValueError:
            hours = -1.0
        if not 1 <= hours <= MAX_SERIES_HOURS:
            raise InvalidPayload.field("hours", f"must be a number from 1 to {MAX_SERIES_HOURS}")
        data = series_for(instance, hours=hours)
        return Response({"t": data.pop("t"), "series": data})


class AdminChangesThresholds(BasePermission):
    message = "only platform admins may change alert thresholds"

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or is_admin(request.user)


class MonitoringThresholdsView(APIView):
    permission_classes = [IsAuthenticated, AdminChangesThresholds]

    @extend_schema(responses={200: ThresholdListOutput}, operation_id="instances_monitoring_thresholds_list")
    def get(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        return Response({"results": ThresholdOutput(thresholds_view(instance), many=True).data})

    @extend_schema(request=ThresholdInput, responses={200: ThresholdListOutput},
                   operation_id="instances_monitoring_thresholds_update")
    def put(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        data = ThresholdInput(data=request.data)
        data.is_valid(raise_exception=True)
        alert_threshold_set(instance=instance, actor=request.user, actor_ip=client_ip(request), **data.validated_data)
        return Response({"results": ThresholdOutput(thresholds_view(instance), many=True).data})
