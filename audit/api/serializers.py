"""Input and output shapes of the audit API."""

from rest_framework import serializers

from audit.models import AuditEvent


class AuditFilterInput(serializers.Serializer):
    """Documented here for OpenAPI; validated by audit.selectors.parse_filters (one set of rules)."""

    since = serializers.CharField(required=False, help_text="ISO 8601 date or date-time (UTC when naive), inclusive")
    until = serializers.CharField(required=False, help_text="ISO 8601 date (whole day included) or date-time, exclusive")
    action = serializers.CharField(required=False, help_text="exact action, or a prefix such as request.*")
    actor = serializers.CharField(required=False, help_text="username or system")
    instance = serializers.CharField(required=False, help_text="instance name")
    request = serializers.IntegerField(required=False, help_text="request id")


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


class AuditEventPageOutput(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="the next page (after=<last seq>), null at the end")
    results = AuditEventOutput(many=True)
