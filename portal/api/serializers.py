"""Input and output serializers of the foundation endpoints (teams, instances, tokens)."""

from rest_framework import serializers

from portal.choices import Environment
from portal.models import Instance, Team


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False, style={"input_type": "password"})
    otp = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                help_text="the code of your authenticator app (or a recovery code), when you "
                                          "enrolled one; required for platform admins outside the demo")


class TokenOutput(serializers.Serializer):
    token = serializers.CharField()


class TeamOutput(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["id", "name", "description"]


class InstanceOutput(serializers.ModelSerializer):
    replica_of = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = Instance
        # Never the admin credentials.
        fields = [
            "id", "name", "environment", "kind", "host", "port", "database", "server_version", "status",
            "replica_of", "replica_lag_bytes", "replica_lag_seconds", "checked_at",
        ]


class InstanceRegisterInput(serializers.Serializer):
    name = serializers.SlugField(max_length=63)
    environment = serializers.ChoiceField(choices=Environment.values)
    host = serializers.CharField(max_length=255)
    port = serializers.IntegerField(min_value=1, max_value=65535, default=5432)
    database = serializers.CharField(max_length=63, default="postgres")
    admin_user = serializers.CharField(max_length=63)
    admin_password = serializers.CharField(max_length=1024, trim_whitespace=False, allow_blank=True, default="")
