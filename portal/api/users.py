"""/api/v1/users/: platform admins list users, preview an offboarding and offboard a user.

Who may do what: platform admins only (403 for every other persona); nobody offboards
themselves (403). Offboarding is portal/services/offboarding.py: the user is deactivated, their
live login roles and grants are revoked on the clusters by system requests, their open requests
cancelled and their tokens revoked.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from portal.api.permissions import IsPlatformAdmin
from portal.selectors.tokens import user_list_for_admin
from portal.services.auth import client_ip
from portal.services.offboarding import MAX_REASON, offboard, preview


class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    is_active = serializers.BooleanField()
    last_login = serializers.DateTimeField(allow_null=True)


class _RoleItem(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    instance = serializers.CharField(source="instance.name")
    name = serializers.CharField()
    team = serializers.CharField(source="team.name")


class _GrantItem(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    instance = serializers.CharField(source="instance.name")
    database = serializers.CharField()
    schema = serializers.CharField()
    role = serializers.CharField()
    privileges = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)


class _RequestItem(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    type = serializers.CharField()
    status = serializers.CharField()
    instance = serializers.CharField(source="instance.name")


class _TokenItem(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    prefix = serializers.CharField()


class OffboardingPreviewOutput(serializers.Serializer):
    user = serializers.CharField(source="user.username")
    is_active = serializers.BooleanField(source="user.is_active")
    login_roles = _RoleItem(many=True, help_text="login roles that get a system disable request (NOLOGIN)")
    grants = _GrantItem(many=True, help_text="grants that get a system revoke request")
    open_requests = _RequestItem(many=True, help_text="submitted requests that are cancelled")
    in_flight = _RequestItem(many=True, help_text="approved or running requests: what they create is revoked "
                                                  "by the periodic check")
    tokens = _TokenItem(many=True, help_text="API tokens that are revoked")
    counts = serializers.DictField(child=serializers.IntegerField())


class OffboardInput(serializers.Serializer):
    reason = serializers.CharField(max_length=MAX_REASON)


class OffboardOutput(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    deactivated = serializers.BooleanField(help_text="false: the user was inactive already")
    disable_requests = serializers.ListField(child=serializers.IntegerField())
    revoke_requests = serializers.ListField(child=serializers.IntegerField())
    cancelled_requests = serializers.ListField(child=serializers.IntegerField())
    in_flight_requests = serializers.ListField(child=serializers.IntegerField())
    tokens_revoked = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())


class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = UserOutput
    permission_classes = [IsPlatformAdmin]

    def get_queryset(self):
        return user_list_for_admin()

    @extend_schema(responses={200: OffboardingPreviewOutput})
    @action(detail=True, methods=["get"])
    def offboarding(self, request, pk=None):
        """What offboarding this user would revoke, cancel and end, now."""
        return Response(OffboardingPreviewOutput(preview(self.get_object())).data)

    @extend_schema(request=OffboardInput, responses={200: OffboardOutput})
    @action(detail=True, methods=["post"])
    def offboard(self, request, pk=None):
        """Deactivate the user and revoke every access the portal gave them (see the preview)."""
        data = OffboardInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = offboard(self.get_object(), actor=request.user, reason=data.validated_data["reason"],
                          actor_ip=client_ip(request))
        return Response(OffboardOutput(result).data)
