"""/api/v1/drift/: findings of the drift scan, for reviewers, auditors and admins.

Auditors read; reviewers and admins also acknowledge a finding, file a revoke for it, and run a
scan now. Requesters get 403: drift shows every team's privileges.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from portal.api.filters import TextFilter
from portal.choices import DriftKind, DriftStatus
from portal.models import Instance
from portal.personas import is_auditor, is_reviewer
from portal.services.auth import client_ip
from portal.services.drift import drift_acknowledge, drift_revoke
from provisioning.drift import drift_scan_all
from provisioning.models import DriftFinding


class CanSeeDrift(BasePermission):
    message = "reviewers, auditors and platform admins only"

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if view.action in ("list", "retrieve"):
            return is_reviewer(user) or is_auditor(user)
        self.message = "reviewers and platform admins only"
        return is_reviewer(user)


class DriftFindingOutput(serializers.ModelSerializer):
    instance = serializers.SlugRelatedField(slug_field="name", read_only=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = DriftFinding
        fields = ["id", "instance", "database", "kind", "role", "object_type", "object_name", "privilege", "detail",
                  "status", "detected_at", "last_seen_at", "acknowledged_by", "resolved_at"]
        read_only_fields = fields


class AcknowledgeInput(serializers.Serializer):
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ScanInput(serializers.Serializer):
    instance = serializers.SlugRelatedField(slug_field="name", queryset=Instance.objects.all(), required=False,
                                            help_text="instance name; every instance when left out")


class ScanOutput(serializers.Serializer):
    results = serializers.DictField(child=serializers.DictField(), help_text="per instance: counts or error")


class RevokeFiledOutput(serializers.Serializer):
    request = serializers.IntegerField(help_text="the revoke request filed, awaiting approval")


class DriftFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DriftStatus.choices, help_text="default: open")
    kind = django_filters.ChoiceFilter(choices=DriftKind.choices)
    instance = TextFilter(field_name="instance__name")
    role = TextFilter()

    class Meta:
        model = DriftFinding
        fields = ["status", "kind", "instance", "role"]


class DriftViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = DriftFindingOutput
    permission_classes = [CanSeeDrift]
    filterset_class = DriftFilter
    queryset = DriftFinding.objects.none()

    def get_queryset(self):
        qs = DriftFinding.objects.select_related("instance", "acknowledged_by").order_by("-detected_at", "-id")
        if self.action == "list" and "status" not in self.request.query_params:
            qs = qs.filter(status=DriftStatus.OPEN)
        return qs

    @extend_schema(request=AcknowledgeInput, responses={200: DriftFindingOutput})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        data = AcknowledgeInput(data=request.data)
        data.is_valid(raise_exception=True)
        finding = drift_acknowledge(finding=self.get_object(), user=request.user,
                                    comment=data.validated_data["comment"], actor_ip=client_ip(request))
        return Response(DriftFindingOutput(finding).data)

    @extend_schema(request=None, responses={201: RevokeFiledOutput})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        filed = drift_revoke(finding=self.get_object(), user=request.user, actor_ip=client_ip(request))
        return Response({"request": filed.pk}, status=status.HTTP_201_CREATED)

    @extend_schema(request=ScanInput, responses={200: ScanOutput})
    @action(detail=False, methods=["post"])
    def scan(self, request):
        data = ScanInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"results": drift_scan_all(instance=data.validated_data.get("instance"))})
