"""Identity (#17): the `disable` request type (offboarding) and named, hashed, expiring API tokens.

The unnamed DRF tokens of the first wave become ApiTokens (their digest, not their key; same
token text keeps working until it expires) and their plain-text rows are deleted.
"""

import hashlib
from datetime import timedelta

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MIGRATED_TOKEN_DAYS = 90


def tokens_forward(apps, schema_editor):
    from django.utils import timezone

    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("portal", "ApiToken")
    expires = timezone.now() + timedelta(days=MIGRATED_TOKEN_DAYS)
    ApiToken.objects.bulk_create([
        ApiToken(user_id=token.user_id, name="api token (from before named tokens)", prefix=token.key[:8],
                 digest=hashlib.sha256(token.key.encode()).hexdigest(), expires_at=expires)
        for token in Token.objects.all()
    ])
    Token.objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0007_access_reviews'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('authtoken', '0004_alter_tokenproxy_options'),
    ]

    operations = [
        migrations.AlterField(
            model_name='approvalpolicy',
            name='request_type',
            field=models.CharField(choices=[('schema', 'schema'), ('role', 'role'), ('grant', 'grant'), ('revoke', 'revoke'), ('ddl', 'schema change (DDL)'), ('replica', 'read replica'), ('disable', 'disable a login role')], max_length=10),
        ),
        migrations.AlterField(
            model_name='changerequest',
            name='type',
            field=models.CharField(choices=[('schema', 'schema'), ('role', 'role'), ('grant', 'grant'), ('revoke', 'revoke'), ('ddl', 'schema change (DDL)'), ('replica', 'read replica'), ('disable', 'disable a login role')], max_length=10),
        ),
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('prefix', models.CharField(max_length=12)),
                ('digest', models.CharField(max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('expires_at', models.DateTimeField()),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-id'],
                'indexes': [models.Index(fields=['user', '-id'], name='api_token_user_idx')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('revoked_at__isnull', True)), fields=('user', 'name'), name='api_token_name_unique')],
            },
        ),
        migrations.RunPython(tokens_forward, migrations.RunPython.noop),
    ]
