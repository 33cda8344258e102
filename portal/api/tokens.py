"""/api/v1/tokens/: a user's API tokens (list, create — shown once —, revoke).

Who may do what: every signed-in user lists, creates and revokes their own tokens; a platform
admin also lists (`?user=<username>`) and revokes anyone's; nobody creates a token for someone else
and nobody reads a token's secret after the answer that created it (only its digest is stored).
Anyone else's token is out of scope: 404.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from portal.api.schema import error_responses
from portal.models import ApiToken
from portal.selectors.tokens import token_list_for, token_status
from portal.services.auth import client_ip
from portal.services.tokens import MAX_NAME, token_create, token_revoke


class ApiTokenOutput(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "user", "status", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields

    def get_status(self, token: ApiToken) -> str:
        return token_status(token)


class ApiTokenCreated(ApiTokenOutput):
    token = serializers.CharField(read_only=True, help_text="The token itself: shown in this answer only.")

    class Meta(ApiTokenOutput.Meta):
        fields = [*ApiTokenOutput.Meta.fields, "token"]
        read_only_fields = fields


class ApiTokenInput(serializers.Serializer):
    name = serializers.CharField(max_length=MAX_NAME)
    expires_in_days = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                               help_text="days until it expires; default PORTAL_API_TOKEN_DAYS, "
                                                         "at most PORTAL_API_TOKEN_MAX_DAYS")


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ApiTokenOutput

    def get_queryset(self):
        username = self.request.query_params.get("user") if self.action == "list" else None
        return token_list_for(self.request.user, username=username or None)

    @extend_schema(parameters=[OpenApiParameter("user", str, description="platform admins: one person's tokens")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ApiTokenInput, responses={201: ApiTokenCreated, **error_responses(409)})
    def create(self, request):
        data = ApiTokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = token_create(user=request.user, name=data.validated_data["name"],
                                  expires_in_days=data.validated_data.get("expires_in_days"),
                                  actor_ip=client_ip(request))
        token.token = key
        return Response(ApiTokenCreated(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiTokenOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke a token now: the owner, or a platform admin."""
        token = token_revoke(token=self.get_object(), actor=request.user, actor_ip=client_ip(request))
        return Response(ApiTokenOutput(token).data)
