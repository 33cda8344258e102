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


class EntitlementOutput(serializers.Serializer):
    instance = serializers.CharField()
    database = serializers.CharField()
    schema = serializers.CharField()
    role = serializers.CharField()
    kind = serializers.ChoiceField(choices=["superuser", "owner", "schema", "tables", "sequences", "default"])
    privileges = serializers.ListField(child=serializers.CharField())
    tables = serializers.JSONField(help_text='"all", a list of table names, or "" where it does not apply')
    source = serializers.CharField(help_text="grant | owner | admin | builtin | drift, empty when unexplained")
    request_id = serializers.IntegerField(allow_null=True)
    request_type = serializers.CharField()
    requester = serializers.CharField()
    approvers = serializers.ListField(child=serializers.CharField())
    granted_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    member_of = serializers.ListField(child=serializers.CharField())
    unexplained = serializers.BooleanField()


class EntitlementPageOutput(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    mode = serializers.ChoiceField(choices=["live", "at"])
    as_of = serializers.DateTimeField()
    unreachable = serializers.DictField(child=serializers.CharField())
    results = EntitlementOutput(many=True)


class AuditEventPageOutput(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="the next page (after=<last seq>), null at the end")
    results = AuditEventOutput(many=True)
