"""/api/v1/instances/{id}/backup-policy/, …/backups/, …/drills/ (issue #20).

Who may do what: platform admins, reviewers and auditors read an instance's policy, backup
catalog and drill history (developers: 403; an instance out of scope: 404); only platform admins
change the policy (`backup.policy_changed`), take a backup now (`backup.requested`, 202) or run a
restore drill now (`backup.drill_requested`, 202). The work runs in the workers; its results
appear in the catalog and the drill history.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.pagination import Pagination
from portal.api.schema import error_responses
from portal.models import Backup, RestoreDrill
from portal.models.backup import BackupHealth, BackupMethod, BackupState, DrillState, DrillTrigger
from portal.selectors.backups import backup_list, check_may_read_backups, drill_list
from portal.selectors.instances import instance_get_for
from portal.services.auth import client_ip
from portal.services.backups import backup_policy_set, backup_request, drill_request, policy_for


class CheckQuerySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    database = serializers.CharField(max_length=63)
    sql = serializers.CharField(max_length=4000)


class PolicyOutput(serializers.Serializer):
    instance = serializers.IntegerField(source="instance_id")
    saved = serializers.SerializerMethodField(help_text="false: the defaults, nothing configured yet")
    enabled = serializers.BooleanField()
    method = serializers.ChoiceField(choices=BackupMethod.choices)
    interval_hours = serializers.FloatField()
    retention_count = serializers.IntegerField()
    retention_days = serializers.FloatField()
    drill_interval_hours = serializers.FloatField()
    check_queries = CheckQuerySerializer(many=True)
    health = serializers.ChoiceField(choices=BackupHealth.choices)
    health_detail = serializers.CharField()
    archiving = serializers.BooleanField(help_text="WAL archiving configured (physical)")

    def get_saved(self, policy) -> bool:
        return policy.pk is not None


class PolicyInput(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    method = serializers.ChoiceField(choices=BackupMethod.choices, required=False)
    interval_hours = serializers.FloatField(required=False, min_value=0.25, max_value=24 * 366)
    retention_count = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    retention_days = serializers.FloatField(required=False, min_value=0.01, max_value=3660)
    drill_interval_hours = serializers.FloatField(required=False, min_value=0, max_value=24 * 366)
    check_queries = CheckQuerySerializer(many=True, required=False, help_text="run read-only in each drill; "
                                         "a check passes when its first value is true (or non-zero)")


class BackupOutput(serializers.Serializer):
    id = serializers.IntegerField()
    method = serializers.ChoiceField(choices=BackupMethod.choices)
    state = serializers.ChoiceField(choices=BackupState.choices)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)
    key = serializers.CharField(help_text="the folder below the backup root")
    wal_start = serializers.CharField()
    wal_end = serializers.CharField()
    checksum = serializers.CharField(help_text="SHA-256 of the backup manifest")
    verified = serializers.BooleanField()
    databases = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()
    deleted_at = serializers.DateTimeField(allow_null=True)


class DrillOutput(serializers.Serializer):
    id = serializers.IntegerField()
    backup = serializers.IntegerField(source="backup_id", allow_null=True)
    trigger = serializers.ChoiceField(choices=DrillTrigger.choices)
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True, default=None)
    state = serializers.ChoiceField(choices=DrillState.choices)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    target_time = serializers.DateTimeField(allow_null=True, help_text="null: the latest state of the archive")
    restored_to = serializers.DateTimeField(allow_null=True)
    rto_seconds = serializers.FloatField(allow_null=True)
    rpo_seconds = serializers.FloatField(allow_null=True)
    checks = serializers.JSONField(help_text='[{"name", "ok", "detail"}]')
    error = serializers.CharField()


class DrillInput(serializers.Serializer):
    target_time = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                            help_text="restore as of this time (physical); omitted: the latest")


class QueuedOutput(serializers.Serializer):
    detail = serializers.CharField()


class BackupPolicyView(APIView):
    @extend_schema(responses={200: PolicyOutput}, operation_id="instances_backup_policy_retrieve")
    def get(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        check_may_read_backups(request.user)
        return Response(PolicyOutput(policy_for(instance)).data)

    @extend_schema(request=PolicyInput, responses={200: PolicyOutput}, operation_id="instances_backup_policy_update")
    def put(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        data = PolicyInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "check_queries" in changes:
            changes["check_queries"] = [dict(item) for item in changes["check_queries"]]
        policy = backup_policy_set(instance=instance, actor=request.user, actor_ip=client_ip(request), **changes)
        return Response(PolicyOutput(policy).data)


class BackupListView(ListAPIView):
    serializer_class = BackupOutput
    pagination_class = Pagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no instance
            return Backup.objects.none()
        return backup_list(self.request.user, instance_get_for(self.request.user, self.kwargs["pk"]))

    @extend_schema(operation_id="instances_backups_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=None, responses={202: QueuedOutput, **error_responses(409)},
                   operation_id="instances_backups_create")
    def post(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        backup_request(instance=instance, actor=request.user, actor_ip=client_ip(request))
        return Response({"detail": "backup queued"}, status=status.HTTP_202_ACCEPTED)


class DrillListView(ListAPIView):
    serializer_class = DrillOutput
    pagination_class = Pagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return RestoreDrill.objects.none()
        return drill_list(self.request.user, instance_get_for(self.request.user, self.kwargs["pk"]))

    @extend_schema(operation_id="instances_drills_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=DrillInput, responses={202: DrillOutput, **error_responses(409)},
                   operation_id="instances_drills_create")
    def post(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        data = DrillInput(data=request.data)
        data.is_valid(raise_exception=True)
        drill = drill_request(instance=instance, actor=request.user, actor_ip=client_ip(request),
                              target_time=data.validated_data["target_time"])
        return Response(DrillOutput(drill).data, status=status.HTTP_202_ACCEPTED)
