"""/api/v1/reviews/campaigns/: access review campaigns (issue #18). Not request approvals.

- GET list / detail: reviewers, auditors, platform admins (every campaign); a certifier (the
  campaigns holding an item of theirs); anyone else sees none (404 on a detail).
- POST (open a campaign): reviewers and platform admins (403 otherwise).
- GET {id}/items/: the items the caller may see (a certifier: their own), filtered.
- POST {id}/decide/: the certifier of every listed item (one or many: a bulk decision).
- POST {id}/reassign/: platform admins.
- GET {id}/report/?format=csv|pdf: reviewers, auditors, platform admins; audited.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response

from audit.api.views import IgnoreFormatNegotiation
from portal.api.filters import NUL_FREE
from portal.api.pagination import Pagination
from portal.api.schema import error_responses
from portal.choices import CertificationDecision, UnansweredAction
from portal.models import AccessReviewCampaign, AccessReviewItem
from portal.personas import is_reviewer
from portal.selectors.access_reviews import (
    PENDING,
    campaign_get_for,
    campaign_list_for,
    campaign_progress,
    items_for,
    with_live_evidence,
)
from portal.services.access_review_decisions import item_reassign, items_decide
from portal.services.access_reviews import campaign_open, campaign_report_export
from portal.services.auth import client_ip

# --- output -----------------------------------------------------------------------------------


class CampaignOutput(serializers.ModelSerializer):
    opened_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    fallback_certifier = serializers.SlugRelatedField(slug_field="username", read_only=True)
    items = serializers.IntegerField(source="item_count", read_only=True)
    decided = serializers.IntegerField(source="decided_count", read_only=True)
    # Plain strings, not enums: their value sets are named in the help (no schema enum collisions).
    status = serializers.CharField(read_only=True, help_text="open | closed")
    unanswered_action = serializers.CharField(read_only=True, help_text="revoke | escalate")

    class Meta:
        model = AccessReviewCampaign
        fields = ["id", "name", "scope", "deadline", "unanswered_action", "fallback_certifier", "opened_by",
                  "opened_at", "status", "closed_at", "deadline_processed_at", "unreachable", "items", "decided"]
        read_only_fields = fields


class ProgressOutput(serializers.Serializer):
    total = serializers.IntegerField()
    decided = serializers.IntegerField()
    pending = serializers.IntegerField()
    keep = serializers.IntegerField()
    revoke = serializers.IntegerField()
    shorten = serializers.IntegerField()
    completion = serializers.FloatField(help_text="percent of items decided")
    revokes_filed = serializers.IntegerField()
    revokes_applied = serializers.IntegerField()
    escalated = serializers.IntegerField()
    automatic = serializers.IntegerField(help_text="items the deadline decided")


class CampaignDetailOutput(CampaignOutput):
    progress = serializers.SerializerMethodField()

    class Meta(CampaignOutput.Meta):
        fields = [*CampaignOutput.Meta.fields, "progress"]
        read_only_fields = fields

    @extend_schema(responses=ProgressOutput)
    def get_progress(self, campaign) -> dict:
        return campaign_progress(campaign)


class ItemOutput(serializers.Serializer):
    id = serializers.IntegerField()
    instance = serializers.CharField(source="instance.name")
    database = serializers.CharField()
    schema = serializers.CharField()
    role = serializers.CharField()
    kind = serializers.CharField()
    privileges = serializers.ListField(child=serializers.CharField())
    tables = serializers.JSONField(help_text='"all", a list of table names, or ""')
    source = serializers.CharField(help_text="grant: made through the portal; outside: found on the cluster")
    owning_team = serializers.CharField(source="owning_team.name", allow_null=True, read_only=True)
    holders = serializers.ListField(child=serializers.CharField())
    certifier = serializers.CharField(source="certifier.username", allow_null=True, read_only=True)
    certifier_reason = serializers.CharField()
    escalated_from = serializers.CharField(source="escalated_from.username", allow_null=True, read_only=True)
    escalated_at = serializers.DateTimeField(allow_null=True)
    evidence = serializers.JSONField(help_text="request, requester, approvers and times, expiry, drift findings")
    last_seen = serializers.DateTimeField(allow_null=True, help_text="last seen connected; null: not sampled yet")
    decision = serializers.CharField(help_text="empty while pending")
    comment = serializers.CharField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True, read_only=True)
    new_expires_at = serializers.DateTimeField(allow_null=True)
    revoke_request = serializers.IntegerField(source="revoke_request_id", allow_null=True)
    revoke_status = serializers.CharField()
    revoke_applied_at = serializers.DateTimeField(allow_null=True)


# --- input ------------------------------------------------------------------------------------


class ScopeInput(serializers.Serializer):
    instances = serializers.ListField(child=serializers.CharField(max_length=63), required=False, max_length=100)
    environments = serializers.ListField(child=serializers.CharField(max_length=10), required=False,
                                         max_length=3)
    teams = serializers.ListField(child=serializers.CharField(max_length=63), required=False, max_length=100)


class UserField(serializers.SlugRelatedField):
    def __init__(self, **kwargs) -> None:
        super().__init__(slug_field="username", queryset=User.objects.filter(is_active=True), **kwargs)


class CampaignInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    scope = ScopeInput(required=False, help_text="every list given narrows the scope; none: every instance")
    deadline = serializers.DateTimeField()
    unanswered_action = serializers.ChoiceField(choices=UnansweredAction.choices)
    fallback_certifier = UserField(help_text="username; certifies orphans and what a team lead holds themself")


class DecideInput(serializers.Serializer):
    items = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
                                  min_length=1, max_length=500)
    decision = serializers.ChoiceField(choices=CertificationDecision.choices)
    comment = serializers.CharField(max_length=2000)
    expires_at = serializers.DateTimeField(required=False, help_text="shorten: the new expiry")


class ReassignInput(serializers.Serializer):
    item = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    certifier = UserField()
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


ITEM_PARAMETERS = [
    OpenApiParameter("decision", str, enum=[PENDING, *CertificationDecision.values]),
    *[OpenApiParameter(name, NUL_FREE, description=description) for name, description in (
        ("instance", "instance name"), ("role", "role name"), ("schema", "schema name"),
        ("team", "owning team name"), ("certifier", "a username"))],
    OpenApiParameter("source", str, enum=["grant", "outside"]),
]


class CanOpenCampaigns(BasePermission):
    """Opening is for reviewers and admins, checked before the body is parsed (a 403, not a 400)."""

    message = "only security reviewers and platform admins open access reviews"

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or is_reviewer(request.user)


class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      viewsets.GenericViewSet):
    permission_classes = [IsAuthenticated, CanOpenCampaigns]
    queryset = AccessReviewCampaign.objects.none()
    lookup_value_regex = r"[0-9]{1,18}"

    def get_serializer_class(self):
        if self.action == "create":
            return CampaignInput
        return CampaignDetailOutput if self.action == "retrieve" else CampaignOutput

    def get_queryset(self):
        return campaign_list_for(self.request.user)

    def _campaign(self) -> AccessReviewCampaign:
        campaign = campaign_get_for(self.request.user, self.kwargs.get("pk"))
        if campaign is None:
            raise NotFound("no such campaign in your scope")
        return campaign

    @extend_schema(request=CampaignInput, responses={201: CampaignDetailOutput})
    def create(self, request, *args, **kwargs):
        data = CampaignInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        campaign = campaign_open(user=request.user, name=values["name"], scope=values.get("scope") or {},
                                 deadline=values["deadline"], unanswered_action=values["unanswered_action"],
                                 fallback_certifier=values["fallback_certifier"], actor_ip=client_ip(request))
        campaign = campaign_get_for(request.user, campaign.pk)
        return Response(CampaignDetailOutput(campaign).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, *args, **kwargs):
        return Response(CampaignDetailOutput(self._campaign()).data)

    @extend_schema(parameters=ITEM_PARAMETERS, responses={200: ItemOutput(many=True)})
    @action(detail=True, methods=["get"], pagination_class=Pagination)
    def items(self, request, pk=None):
        campaign = self._campaign()
        filters = {name: request.query_params.get(name, "") for name in
                   ("decision", "instance", "role", "schema", "team", "certifier", "source")}
        if filters["decision"] and filters["decision"] not in (PENDING, *CertificationDecision.values):
            raise serializers.ValidationError({"decision": [f"one of: {PENDING}, "
                                                            f"{', '.join(CertificationDecision.values)}"]})
        queryset = items_for(request.user, campaign, filters)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(ItemOutput(with_live_evidence(page), many=True).data)

    @extend_schema(request=DecideInput, responses={200: ItemOutput(many=True), **error_responses(409)})
    @action(detail=True, methods=["post"])
    def decide(self, request, pk=None):
        campaign = self._campaign()
        data = DecideInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        items = items_decide(campaign=campaign, user=request.user, item_ids=values["items"],
                             decision=values["decision"], comment=values["comment"],
                             expires_at=values.get("expires_at"), actor_ip=client_ip(request))
        fresh = list(items_for(request.user, campaign).filter(pk__in=[i.pk for i in items]))
        return Response(ItemOutput(with_live_evidence(fresh), many=True).data)

    @extend_schema(request=ReassignInput, responses={200: ItemOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def reassign(self, request, pk=None):
        campaign = self._campaign()
        data = ReassignInput(data=request.data)
        data.is_valid(raise_exception=True)
        item = AccessReviewItem.objects.restrict(request.user, "view").filter(
            campaign=campaign, pk=data.validated_data["item"]).first()
        if item is None:
            raise NotFound("no such item in this campaign")
        item = item_reassign(item=item, user=request.user, certifier=data.validated_data["certifier"],
                             comment=data.validated_data["comment"], actor_ip=client_ip(request))
        fresh = items_for(request.user, campaign).filter(pk=item.pk)
        return Response(ItemOutput(with_live_evidence(list(fresh))[0]).data)

    @extend_schema(parameters=[OpenApiParameter("format", str, enum=["csv", "pdf"], required=True)],
                   responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], content_negotiation_class=IgnoreFormatNegotiation)
    def report(self, request, pk=None):
        campaign = self._campaign()
        content, content_type, filename = campaign_report_export(
            campaign=campaign, user=request.user, format=request.query_params.get("format", ""),
            actor_ip=client_ip(request))
        response = HttpResponse(content, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
