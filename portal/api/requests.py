"""/api/v1/requests/: submit, list, read, preview, and approve / reject / cancel / retry.

Thin: input serializers parse, services decide, selectors read. An out-of-scope request is a 404
(the selector never returns it); a forbidden action on a visible one is a 403 (PolicyViolation);
a request in the wrong state is a 409 (Conflict); bad input is a 400 naming the field.
"""

from __future__ import annotations

import django_filters
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from portal.api.filters import TextFilter
from portal.api.pagination import BoundedCountPagination
from portal.api.schema import error_responses
from portal.choices import RequestStatus, RequestType
from portal.errors import InvalidPayload
from portal.models import Approval, BreakGlass, ChangeRequest, Execution, Instance, Team
from portal.personas import is_reviewer
from portal.selectors.approvals import approval_tally, approvals_of, requirement_of
from portal.selectors.breakglass import break_glass_for
from portal.selectors.request_context import request_context
from portal.selectors.request_wait import parse_wait, wait_for_change
from portal.selectors.requests import (
    _by_id_or_name,
    can_approve,
    name_or_id_usable,
    request_get_for,
    request_history_load,
    request_id_or_404,
    request_page_for,
)
from portal.selectors.verification import revocation_verification_of
from portal.services.auth import client_ip
from portal.services.requests import (
    preview_dry_run,
    request_approve,
    request_cancel,
    request_preview,
    request_reject,
    request_retry,
    request_submit,
)
from provisioning.secrets import secret_reveal

# --- input ------------------------------------------------------------------------------------


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}],
                      "description": "the object's id or its name"})
class IdOrNameField(serializers.Field):
    """A team or instance given by id (integer or digits) or by name, among those the caller sees."""

    def __init__(self, model, **kwargs) -> None:
        self.model = model
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or not name_or_id_usable(str(data)):
            raise serializers.ValidationError("give an id or a name")
        user = self.context["request"].user
        found = self.model.objects.restrict(user, "view").filter(_by_id_or_name(data)).first()
        if found is None:
            raise serializers.ValidationError(f"no {self.model._meta.verbose_name} {data!r} that you can see")
        return found

    def to_representation(self, value):
        return value.pk


class RequestInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=RequestType.choices)
    instance = IdOrNameField(Instance)
    team = IdOrNameField(Team)
    justification = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    payload = serializers.JSONField(help_text="per type: see the API docs (schema, role, grant, revoke, ddl, replica)")
    dry_run_override = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default="",
        help_text="DDL on dev and staging: why the request should reach the reviewers although its dry run "
                  "failed. Without it such a submit is a 400 naming this field; with it the request is "
                  "submitted, the reason kept on it (dry_run.override) and the failure marked for reviewers.")


class PreviewInput(RequestInput):
    justification = None
    dry_run_override = None


class DecisionInput(serializers.Serializer):
    comment = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")


# --- output -----------------------------------------------------------------------------------


def _when(value, tz) -> str | None:
    """A datetime as DRF's DateTimeField renders it (ISO 8601 in `tz`, "Z" for UTC)."""
    if value is None:
        return None
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class RequestOutput(serializers.ModelSerializer):
    instance = serializers.SlugRelatedField(slug_field="name", read_only=True)
    team = serializers.SlugRelatedField(slug_field="name", read_only=True)
    owner_team = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    requester = serializers.SerializerMethodField()
    filed_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True,
        help_text="who filed a system request by hand (a reviewer's drift revoke); they may not approve it")

    class Meta:
        model = ChangeRequest
        fields = [
            "id", "type", "status", "status_detail", "instance", "instance_id", "team", "team_id", "owner_team",
            "requester", "filed_by", "justification", "payload", "plan", "plan_hash", "risk", "risk_reasons", "findings",
            "dry_run", "expires_at", "created_at", "updated_at", "approved_at", "applied_at",
            "break_glass",
        ]
        read_only_fields = fields

    def get_requester(self, obj) -> str:
        return obj.requester.username if obj.requester_id else "system"

    def to_representation(self, obj) -> dict:
        """The same dict as DRF's generic field loop, built directly.

        Lists render up to 500 rows of 23 fields; the generic loop (a field object, an attribute
        walk and a timezone lookup per value) was most of a list's CPU time under load.
        tests/api/test_request_output.py compares both on every kind of row.
        """
        tz = timezone.get_current_timezone()

        if hasattr(obj, "listed_team"):  # a list page (selectors.requests.request_page_for): names annotated
            instance, team, owner_team = obj.listed_instance, obj.listed_team, obj.listed_owner_team
        else:
            instance, team = obj.instance.name, obj.team.name
            owner_team = obj.owner_team.name if obj.owner_team_id is not None else None
        if hasattr(obj, "listed_requester"):  # a list page, or a detail read with user_names
            requester = obj.listed_requester if obj.requester_id else "system"
            filed_by = obj.listed_filed_by
        else:
            requester = self.get_requester(obj)
            filed_by = obj.filed_by.username if obj.filed_by_id is not None else None
        return {
            "id": obj.pk, "type": obj.type, "status": obj.status, "status_detail": obj.status_detail,
            "instance": instance, "instance_id": obj.instance_id, "team": team, "team_id": obj.team_id,
            "owner_team": owner_team, "requester": requester,
            "filed_by": filed_by, "justification": obj.justification, "payload": obj.payload,
            "plan": obj.plan, "plan_hash": obj.plan_hash, "risk": obj.risk, "risk_reasons": obj.risk_reasons,
            "findings": obj.findings, "dry_run": obj.dry_run, "expires_at": _when(obj.expires_at, tz),
            "created_at": _when(obj.created_at, tz), "updated_at": _when(obj.updated_at, tz),
            "approved_at": _when(obj.approved_at, tz), "applied_at": _when(obj.applied_at, tz),
            # Applied without prior approval for an incident (break-glass): the badge, in every list.
            "break_glass": obj.break_glass,
        }


class ApprovalOutput(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username")
    current = serializers.SerializerMethodField(help_text="bound to the request's current plan hash")

    class Meta:
        model = Approval
        fields = ["reviewer", "decision", "comment", "plan_hash", "current", "created_at"]

    def get_current(self, obj) -> bool:
        return obj.plan_hash == obj.request.plan_hash


class ExecutionOutput(serializers.ModelSerializer):
    class Meta:
        model = Execution
        fields = ["attempt", "worker", "plan_hash", "started_at", "finished_at", "statements", "outcome", "error",
                  "sqlstate"]


class ReviewStateOutput(serializers.Serializer):
    approvals_required = serializers.IntegerField()
    approvals = serializers.IntegerField()
    approver_groups = serializers.ListField(child=serializers.CharField())
    requires_owner_lead = serializers.BooleanField()
    owner_team = serializers.CharField(allow_null=True)
    owner_lead_approved = serializers.BooleanField()
    can_decide = serializers.BooleanField(help_text="may the caller approve or reject now")
    reason = serializers.CharField(help_text="why not, when can_decide is false")


class RevocationVerifiedOutput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=["verified", "failed", "pending"],
                                      help_text="pending: the worker has not read the catalog yet")
    checked_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    remaining = serializers.ListField(child=serializers.CharField(), help_text="privileges still held")
    drift_findings = serializers.ListField(child=serializers.IntegerField(), help_text="findings opened")


class BreakGlassReviewOutput(serializers.ModelSerializer):
    """A break-glass request's incident, time box and post-hoc review."""

    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    overdue = serializers.SerializerMethodField(help_text="unreviewed past review_due_at")

    class Meta:
        model = BreakGlass
        fields = ["incident_ref", "duration_minutes", "ends_at", "review_due_at", "reviewed_at", "reviewed_by",
                  "review_outcome", "review_comment", "overdue"]
        read_only_fields = fields

    def get_overdue(self, obj) -> bool:
        return obj.reviewed_at is None and obj.review_due_at < timezone.now()


class RequestDetailOutput(RequestOutput):
    approvals = ApprovalOutput(many=True, read_only=True)
    executions = ExecutionOutput(many=True, read_only=True)
    review = serializers.SerializerMethodField()
    break_glass_review = serializers.SerializerMethodField()
    revocation_verified = serializers.SerializerMethodField()

    class Meta(RequestOutput.Meta):
        fields = [*RequestOutput.Meta.fields, "approvals", "executions", "review", "break_glass_review", "revocation_verified"]
        read_only_fields = fields

    def to_representation(self, obj) -> dict:
        """RequestOutput's dict, with the approvals and executions built directly too.

        Through DRF's fields, every answer of detail, submit and approve built the fields of three
        model serializers (this one, ApprovalOutput, ExecutionOutput) from the models' metadata,
        about a fifth of a detail's CPU. tests/api/test_request_output.py compares both ways.
        """
        data = super().to_representation(obj)
        tz = timezone.get_current_timezone()
        data["approvals"] = [
            {"reviewer": approval.reviewer.username, "decision": approval.decision, "comment": approval.comment,
             "plan_hash": approval.plan_hash, "current": approval.plan_hash == approval.request.plan_hash,
             "created_at": _when(approval.created_at, tz)}
            for approval in approvals_of(obj)]
        data["executions"] = [
            {"attempt": execution.attempt, "worker": execution.worker, "plan_hash": execution.plan_hash,
             "started_at": _when(execution.started_at, tz), "finished_at": _when(execution.finished_at, tz),
             "statements": execution.statements, "outcome": execution.outcome, "error": execution.error,
             "sqlstate": execution.sqlstate}
            for execution in obj.executions.all()]
        data["review"] = self.get_review(obj)
        data["break_glass_review"] = self.get_break_glass_review(obj)
        data["revocation_verified"] = self.get_revocation_verified(obj)
        return data

    @extend_schema_field(ReviewStateOutput)
    def get_review(self, obj) -> dict:
        viewer = self.context["request"].user
        requirement = requirement_of(obj)
        tally = approval_tally(obj, requirement, viewer=viewer)
        ok, reason = can_approve(viewer, obj)
        return {**requirement.as_dict(), "approvals": tally.group_approvals,
                "owner_lead_approved": tally.lead_approved, "can_decide": ok, "reason": reason}

    @extend_schema_field(BreakGlassReviewOutput(allow_null=True))
    def get_break_glass_review(self, obj) -> dict | None:
        """The incident, the time box and the post-hoc review of a break-glass request (else null)."""
        record = break_glass_for(obj)
        return BreakGlassReviewOutput(record).data if record is not None else None

    @extend_schema_field(RevocationVerifiedOutput(allow_null=True))
    def get_revocation_verified(self, obj) -> dict | None:
        """An applied revoke or disable: whether the worker found the access gone on the catalog."""
        found = revocation_verification_of(obj)
        return RevocationVerifiedOutput(found).data if found is not None else None


class ApprovalProgressOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="approvals that count, on the current plan")
    required = serializers.IntegerField()
    approvers = serializers.ListField(child=serializers.CharField(), help_text="whose approvals count, in order")
    satisfied = serializers.BooleanField()
    lead_team = serializers.CharField(help_text="the team whose lead must approve too; empty when none")
    lead_approved = serializers.BooleanField()


class AccessDiffRowOutput(serializers.Serializer):
    privilege = serializers.CharField()
    now = serializers.CharField(help_text="where the role holds it now; empty when it does not")
    after = serializers.CharField(help_text="where it holds it once the plan ran")
    flag = serializers.ChoiceField(choices=["", "redundant", "added", "removed", "not held"],
                                   help_text="redundant: a grant of what the role already holds")


class SchemaReachOutput(serializers.Serializer):
    grantee = serializers.CharField()
    how = serializers.CharField(help_text="its privileges on the schema, its tables and sequences")
    owner = serializers.BooleanField()
    builtin = serializers.BooleanField()
    members = serializers.ListField(child=serializers.CharField(), help_text="roles reaching it through membership")


class RoleSessionOutput(serializers.Serializer):
    pid = serializers.IntegerField()
    user = serializers.CharField()
    database = serializers.CharField(allow_null=True)
    application = serializers.CharField()
    client = serializers.CharField()
    state = serializers.CharField()
    since = serializers.CharField(allow_null=True)


class RecentRequestOutput(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    type = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()


class RequestContextOutput(serializers.Serializer):
    """A reviewer's context (#19): read live from the instance for grants and revokes (cached 30 s)."""

    progress = ApprovalProgressOutput()
    unreachable = serializers.CharField(required=False, help_text="why the instance could not be read; empty when read")
    schema_exists = serializers.BooleanField(required=False, allow_null=True)
    diff = AccessDiffRowOutput(many=True, required=False)
    redundant = serializers.ListField(child=serializers.CharField(), required=False)
    reach = SchemaReachOutput(many=True, required=False)
    sessions = RoleSessionOutput(many=True, required=False)
    recent = RecentRequestOutput(many=True)


class SecretOutput(serializers.Serializer):
    password = serializers.CharField(help_text="the generated password of the login role; shown once")


class PreviewOutput(serializers.Serializer):
    plan = serializers.ListField(child=serializers.CharField())
    plan_hash = serializers.CharField()
    risk = serializers.CharField()
    risk_reasons = serializers.ListField(child=serializers.CharField())
    approvals_required = serializers.IntegerField()
    approver_groups = serializers.ListField(child=serializers.CharField())
    requires_owner_lead = serializers.BooleanField()
    owner_team = serializers.CharField(allow_null=True)
    findings = serializers.ListField(child=serializers.JSONField())
    payload = serializers.JSONField()
    dry_run = serializers.JSONField(allow_null=True, required=False, help_text=(
        "DDL on dev and staging: the plan run on the target and rolled back, as a submit will "
        "({ok, error, sqlstate, statement_index, skipped, note, ms}); null where none runs"))


# --- filters ----------------------------------------------------------------------------------


class RequestFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RequestStatus.choices)
    type = django_filters.ChoiceFilter(choices=RequestType.choices)
    team = TextFilter(method="by_team", help_text="team id or name")
    instance = TextFilter(method="by_instance", help_text="instance id or name")

    class Meta:
        model = ChangeRequest
        fields = ["status", "type", "team", "instance"]

    def by_team(self, queryset, name, value):
        return queryset.filter(team__in=Team.objects.filter(_by_id_or_name(value)))

    def by_instance(self, queryset, name, value):
        return queryset.filter(instance__in=Instance.objects.filter(_by_id_or_name(value)))


# --- the viewset ------------------------------------------------------------------------------


class RequestViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = RequestOutput
    filterset_class = RequestFilter
    pagination_class = BoundedCountPagination
    queryset = ChangeRequest.objects.none()  # for the schema generator; get_queryset scopes it

    def get_queryset(self):
        return request_page_for(self.request.user)

    def _detail(self, pk) -> Response:
        return self._respond(request_get_for(self.request.user, pk, user_names=True))

    def _respond(self, obj: ChangeRequest, status_code: int = status.HTTP_200_OK) -> Response:
        return Response(RequestDetailOutput(obj, context={"request": self.request}).data, status=status_code)

    @extend_schema(
        parameters=[
            OpenApiParameter("wait", {"type": "integer", "minimum": 0, "maximum": 30}, description=(
                "Long-poll: hold the answer up to this many seconds until the status is no longer `status` "
                "(required with it); loop on it to follow a request without polling")),
            OpenApiParameter("status", OpenApiTypes.STR, description="the status the caller last saw (with `wait`)"),
        ],
        responses={200: RequestDetailOutput})
    def retrieve(self, request, pk=None):
        wait = parse_wait(request.query_params.get("wait"))
        if wait:
            seen_status = request.query_params.get("status")
            if not seen_status:
                # Without it the answer would wait for any change from now: say what was seen last.
                raise InvalidPayload.field("status", "required with wait: the status you last saw")
            seen = request_get_for(request.user, pk, history=False)  # 404 outside the caller's scope
            wait_for_change(seen.pk, seen_status, wait)
        return self._detail(pk)

    @extend_schema(request=RequestInput, responses={201: RequestDetailOutput},
                   description="Submit a request. `team` and `instance` may be given by id or by name.")
    def create(self, request):
        data = RequestInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        created = request_submit(user=request.user, actor_ip=client_ip(request), **data.validated_data)
        # The row as the service wrote it: reading it back would cost four queries for the same values.
        return self._respond(request_history_load(created, new=True), status.HTTP_201_CREATED)

    @extend_schema(request=PreviewInput, responses={200: PreviewOutput},
                   description="The plan, risk and approvals a submit would produce; writes nothing.")
    @action(detail=False, methods=["post"])
    def preview(self, request):
        data = PreviewInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        result = request_preview(user=request.user, **data.validated_data)
        result["dry_run"] = preview_dry_run(result, type=data.validated_data["type"],
                                            instance=data.validated_data["instance"], team=data.validated_data["team"],
                                            reuse=True)
        return Response(PreviewOutput(result).data)

    def _decision(self, request, pk, service, actor_kw: str) -> Response:
        obj = request_get_for(request.user, pk, history=False)  # the service locks and re-reads it
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        decided = service(request=obj, **{actor_kw: request.user}, comment=data.validated_data["comment"],
                          actor_ip=client_ip(request))
        # The row the service locked and changed (with its related rows and policy already read).
        return self._respond(request_history_load(decided))

    @extend_schema(request=DecisionInput, responses={200: RequestDetailOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        request_id = request_id_or_404(pk)
        data = DecisionInput(data=request.data)
        if not data.is_valid():
            request_get_for(request.user, request_id, history=False)  # out of scope: a 404 before the 400
            raise ValidationError(data.errors)
        # The hot path of a reviewer (bench/load.py): the service reads the row once, locking it
        # within the caller's scope (404 outside it), and hands it back with its approvals.
        decided = request_approve(request=request_id, reviewer=request.user, comment=data.validated_data["comment"],
                                  actor_ip=client_ip(request))
        return self._respond(request_history_load(decided))

    @extend_schema(request=DecisionInput, responses={200: RequestDetailOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decision(request, pk, request_reject, "reviewer")

    @extend_schema(request=DecisionInput, responses={200: RequestDetailOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._decision(request, pk, request_cancel, "user")

    @extend_schema(request=DecisionInput, responses={200: RequestDetailOutput, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return self._decision(request, pk, request_retry, "user")

    @extend_schema(responses={200: RequestContextOutput},
                   description="Reviewers and platform admins: the context of a request — approval progress, "
                               "the requester's recent requests on the schema and, for a grant or revoke, the "
                               "role's privileges now and after (redundant ones flagged), who else reaches the "
                               "schema and how, and the sessions of the role. Read live from the instance "
                               "(cached 30 s); `unreachable` says why when it cannot be read. Others who can see "
                               "the request get 403.")
    @action(detail=True, methods=["get"], url_path="context", url_name="context")
    def review_context(self, request, pk=None):
        obj = request_get_for(request.user, pk, history=False)
        if not is_reviewer(request.user):
            raise PermissionDenied("reviewers and platform admins only")
        context = request_context(request.user, obj)
        return Response(RequestContextOutput({
            **{key: context[key] for key in ("progress", "recent")},
            **{key: context[key] for key in ("unreachable", "schema_exists", "diff", "redundant", "reach", "sessions")
               if key in context},
        }).data)

    @extend_schema(responses={200: SecretOutput},
                   description="The requester only, once: the generated password of the login role this request "
                               "created. Later calls answer 410; others who can see the request get 403.")
    @action(detail=True, methods=["get"])
    def secret(self, request, pk=None):
        obj = request_get_for(request.user, pk)
        password = secret_reveal(request=obj, user=request.user, actor_ip=client_ip(request))
        # Never cached by a browser or a proxy: it is shown once.
        return Response(SecretOutput({"password": password}).data, headers={"Cache-Control": "no-store"})
