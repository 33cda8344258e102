"""/api/v1/identity/group-mappings/: identity-provider groups → teams and personas. Platform admins only.

Every other persona gets 403 on every method (the mapping decides who gets which access, so even
reading it is an admin's business). Writes go through portal/services/identity.py, which checks the
persona again, validates every field (400 naming it) and audits the change.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from portal.api.permissions import IsPlatformAdmin
from portal.api.schema import error_responses
from portal.choices import MembershipRole, Persona
from portal.selectors.identity import group_mappings
from portal.services.auth import client_ip
from portal.services.identity import mapping_create, mapping_delete, mapping_update


class GroupMappingInput(serializers.Serializer):
    group = serializers.CharField(max_length=200, help_text="The group's name as the provider sends it.")
    team = serializers.CharField(max_length=63, required=False, allow_blank=True, allow_null=True,
                                 help_text="A team's name; or give `persona`.")
    role = serializers.ChoiceField(choices=MembershipRole.choices, required=False, allow_blank=True,
                                   help_text="member (default) or lead; with `team` only.")
    persona = serializers.ChoiceField(choices=Persona.choices, required=False, allow_blank=True,
                                      help_text="requesters, reviewers, auditors or platform-admins; or give `team`.")


class GroupMappingOutput(serializers.Serializer):
    id = serializers.IntegerField()
    group = serializers.CharField()
    team = serializers.CharField(source="team.name", allow_null=True, default=None)
    role = serializers.CharField(source="team_role", allow_null=True)
    persona = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # "" in the table means "not this kind of mapping": null in the API.
        return {**data, "role": data["role"] or None, "persona": data["persona"] or None}


def _fields(data: GroupMappingInput) -> dict:
    values = data.validated_data
    return {"group": values["group"], "team": values.get("team") or None, "team_role": values.get("role") or "",
            "persona": values.get("persona") or ""}


class GroupMappingViewSet(viewsets.ModelViewSet):
    serializer_class = GroupMappingOutput
    permission_classes = [IsPlatformAdmin]
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self):
        return group_mappings()

    @extend_schema(request=GroupMappingInput, responses={201: GroupMappingOutput, **error_responses(400, 403)})
    def create(self, request, *args, **kwargs):
        data = GroupMappingInput(data=request.data)
        data.is_valid(raise_exception=True)
        mapping = mapping_create(actor=request.user, actor_ip=client_ip(request), **_fields(data))
        return Response(GroupMappingOutput(mapping).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=GroupMappingInput, responses={200: GroupMappingOutput, **error_responses(400, 403)})
    def update(self, request, *args, **kwargs):
        data = GroupMappingInput(data=request.data)
        data.is_valid(raise_exception=True)
        mapping = mapping_update(actor=request.user, mapping=self.get_object(), actor_ip=client_ip(request),
                                 **_fields(data))
        return Response(GroupMappingOutput(mapping).data)

    @extend_schema(responses={204: None, **error_responses(403)})
    def destroy(self, request, *args, **kwargs):
        mapping_delete(actor=request.user, mapping=self.get_object(), actor_ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
