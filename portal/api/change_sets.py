"""/api/v1/change-sets/: access as code (`dbportal plan` / `dbportal apply`, docs/access-as-code.md).

- POST plan/ {document}: the requests an apply would file, and what it leaves alone; writes nothing.
- POST / {document, justification, source}: files them as one change set (201), or answers 200
  with no change set when the team already matches the document (idempotent).
- GET / and GET {id}/: change sets whose requests the caller may see, with each request's status.
- POST {id}/approve/ and reject/ {comment}: a reviewer decides every open request of the set.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from portal.api.schema import error_responses
from portal.selectors.change_sets import change_set_get_for, change_sets_for
from portal.services.auth import client_ip
from portal.services.change_sets import change_set_apply, change_set_approve, change_set_plan, change_set_reject


class PlanInput(serializers.Serializer):
    document = serializers.JSONField(help_text="the desired state: version, instance, team, schemas, roles, grants")


class ApplyInput(PlanInput):
    justification = serializers.CharField(max_length=2000)
    source = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class ChangeSetDecisionInput(serializers.Serializer):
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ChangeOutput(serializers.Serializer):
    op = serializers.ChoiceField(choices=["add", "remove", "keep", "wait"], help_text=(
        "add / remove: a request an apply files; keep: left alone or already asked for; wait: filed by a later "
        "apply, once the role or schema it needs is live"))
    type = serializers.CharField()
    payload = serializers.JSONField()
    reason = serializers.CharField()
    pending_request = serializers.IntegerField(allow_null=True)


class PlanOutput(serializers.Serializer):
    changes = ChangeOutput(many=True)


class ChangeSetRequestOutput(serializers.Serializer):
    id = serializers.IntegerField(source="request.id")
    op = serializers.CharField()
    type = serializers.CharField(source="request.type")
    status = serializers.CharField(source="request.status")
    plan_hash = serializers.CharField(source="request.plan_hash")
    payload = serializers.JSONField(source="request.payload")


class ChangeSetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.name")
    instance = serializers.CharField(source="instance.name")
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    justification = serializers.CharField()
    source = serializers.CharField()
    document_sha256 = serializers.CharField()
    requests = ChangeSetRequestOutput(source="items.all", many=True)


class ApplyOutput(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    requests = ChangeSetRequestOutput(many=True)
    changes = ChangeOutput(many=True)


class ChangeSetViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = ChangeSetOutput

    def get_queryset(self):
        return change_sets_for(self.request.user)

    @extend_schema(responses={200: ChangeSetOutput})
    def retrieve(self, request, pk=None):
        return Response(ChangeSetOutput(change_set_get_for(request.user, pk)).data)

    @extend_schema(request=PlanInput, responses={200: PlanOutput},
                   description="What an apply of the document would file, and what it leaves alone; writes nothing.")
    @action(detail=False, methods=["post"])
    def plan(self, request):
        data = PlanInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = change_set_plan(user=request.user, document=data.validated_data["document"])
        return Response(PlanOutput({"changes": [c.as_dict() for c in changes]}).data)

    @extend_schema(request=ApplyInput, responses={201: ApplyOutput, 200: ApplyOutput},
                   description="File the document's requests as one change set (201); 200 with `id` null when the "
                               "team already matches it.")
    def create(self, request):
        data = ApplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        change_set, changes = change_set_apply(
            user=request.user, document=data.validated_data["document"],
            justification=data.validated_data["justification"], source=data.validated_data["source"],
            actor_ip=client_ip(request))
        body = {"id": change_set.pk if change_set else None,
                "requests": list(change_set.items.select_related("request").order_by("position")) if change_set else [],
                "changes": [c.as_dict() for c in changes]}
        return Response(ApplyOutput(body).data, status=status.HTTP_201_CREATED if change_set else status.HTTP_200_OK)

    def _decision(self, request, pk, service) -> Response:
        change_set = change_set_get_for(request.user, pk)
        data = ChangeSetDecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        service(change_set=change_set, reviewer=request.user, comment=data.validated_data["comment"],
                actor_ip=client_ip(request))
        return Response(ChangeSetOutput(change_set_get_for(request.user, pk)).data)

    @extend_schema(request=ChangeSetDecisionInput, responses={200: ChangeSetOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decision(request, pk, change_set_approve)

    @extend_schema(request=ChangeSetDecisionInput, responses={200: ChangeSetOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decision(request, pk, change_set_reject)
