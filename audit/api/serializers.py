"""Input and output shapes of the audit API."""

from rest_framework import serializers

from audit.models import AuditEvent


class AuditEventOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance", "database",
                  "statement", "request_id", "approvers", "outcome", "details", "prev_hash", "hash"]


class VerifyOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    events = serializers.IntegerField()
    head_hash = serializers.CharField()
    head_seq = serializers.IntegerField()
    first_broken_seq = serializers.IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True)
    start_seq = serializers.IntegerField(help_text="the first seq checked (after a checkpoint when incremental)")
    checkpoints = serializers.IntegerField(help_text="signed checkpoint files that verified")
    checkpoint_problems = serializers.ListField(child=serializers.CharField(),
                                                help_text="checkpoint files edited, deleted or not signed")
    pending = serializers.IntegerField(help_text="recorded events not chained yet")


class AuditEventPageOutput(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="the next page (after=<last seq>), null at the end")
    results = AuditEventOutput(many=True)
