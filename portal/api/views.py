"""Foundation endpoints: tokens, teams, instances."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from audit.services import record
from portal.api.permissions import IsPlatformAdmin
from portal.api.schema import error_responses
from portal.api.serializers import InstanceOutput, InstanceRegisterInput, TeamOutput, TokenInput, TokenOutput
from portal.models import Instance, Team
from portal.services.auth import client_ip, login_attempt
from portal.services.instances import instance_register
from portal.services.mfa import ENROL as MFA_ENROL
from portal.services.mfa import PENDING as MFA_PENDING
from portal.services.mfa import mfa_check, mfa_state_for_sign_in
from portal.services.replicas import replica_decommission, replica_promote
from portal.services.tokens import token_issue_for_login


class LoginThrottle(AnonRateThrottle):
    scope = "login"
    rate = "30/min"


class TokenView(APIView):
    """Exchange a username and password for an API token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]

    @extend_schema(request=TokenInput, responses={200: TokenOutput}, auth=[])
    def post(self, request):
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = login_attempt(request=request, username=data.validated_data["username"],
                             password=data.validated_data["password"], channel="api")
        if user is None:
            raise AuthenticationFailed("wrong username or password")
        # The second factor (portal/services/mfa.py): a code whenever one is enrolled; an admin who
        # must have one and has none gets no token until they enrol on the web.
        state = mfa_state_for_sign_in(user)
        if state == MFA_ENROL:
            request._request.refusal_audited = True
            with transaction.atomic():
                record("auth.mfa_failed", actor=user, actor_ip=client_ip(request), object_type="user",
                       object_id=user.pk, outcome="refused", details={"channel": "api", "reason": "not enrolled"})
            raise PermissionDenied("platform admins must enrol an authenticator app first (web: Account, MFA)")
        if state == MFA_PENDING and not mfa_check(user=user, code=data.validated_data.get("otp"), channel="api",
                                                  actor_ip=client_ip(request)):
            request._request.refusal_audited = True  # audited as auth.mfa_failed
            raise AuthenticationFailed("a valid one-time code is required in otp: your authenticator app's, "
                                       "or a recovery code")
        # A new named token each call (the earlier ones cannot be shown again; see services/tokens.py).
        _token, key = token_issue_for_login(user=user, actor_ip=client_ip(request))
        return Response({"token": key})


class TeamViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = TeamOutput

    def get_queryset(self):
        return Team.objects.restrict(self.request.user, "view").order_by("name")


class InstanceViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = InstanceOutput
    filterset_fields = ["environment", "kind", "status"]

    def get_queryset(self):
        return Instance.objects.restrict(self.request.user, "view").select_related("replica_of").order_by("name")

    def get_permissions(self):
        if self.action in ("create", "promote", "decommission"):
            return [IsPlatformAdmin()]
        return super().get_permissions()

    @extend_schema(request=InstanceRegisterInput, responses={201: InstanceOutput})
    def create(self, request, *args, **kwargs):
        data = InstanceRegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        instance = instance_register(actor=request.user, actor_ip=client_ip(request), **data.validated_data)
        return Response(InstanceOutput(instance).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: InstanceOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        """Admin: promote a replica to a writable primary (pg_ctl promote; replica_of cleared)."""
        instance = replica_promote(instance=self.get_object(), actor=request.user, actor_ip=client_ip(request))
        return Response(InstanceOutput(instance).data)

    @extend_schema(request=None, responses={200: InstanceOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def decommission(self, request, pk=None):
        """Admin: stop a replica, remove its data directory and mark it retired."""
        instance = replica_decommission(instance=self.get_object(), actor=request.user, actor_ip=client_ip(request))
        return Response(InstanceOutput(instance).data)
