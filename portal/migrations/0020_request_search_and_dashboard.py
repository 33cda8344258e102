"""Scale (#23): the request search reads a GIN index (the words of the searched payload keys as a
generated tsvector column, 'simple' configuration: no stemming, no stop words); the dashboard's
counts per day and times to apply read ranges of created_at and applied_at."""

import django.contrib.postgres.indexes
import django.contrib.postgres.search
import django.db.models.fields.json
import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0019_team_checks'),
    ]

    operations = [
        migrations.AddField(
            model_name='changerequest',
            name='search_vector',
            field=models.GeneratedField(db_persist=True, expression=models.Func(models.Value('simple'), django.db.models.functions.text.Lower(django.db.models.functions.text.Concat(django.db.models.fields.json.KeyTextTransform('name', 'payload'), models.Value('\n', output_field=models.TextField()), django.db.models.fields.json.KeyTextTransform('role', 'payload'), models.Value('\n', output_field=models.TextField()), django.db.models.fields.json.KeyTextTransform('schema', 'payload'), models.Value('\n', output_field=models.TextField()), django.db.models.fields.json.KeyTextTransform('owner_role', 'payload'), models.Value('\n', output_field=models.TextField()), django.db.models.fields.json.KeyTextTransform('member_of', 'payload'), models.Value('\n', output_field=models.TextField()))), function='to_tsvector', output_field=django.contrib.postgres.search.SearchVectorField()), output_field=django.contrib.postgres.search.SearchVectorField()),
        ),
        migrations.AddIndex(
            model_name='changerequest',
            index=django.contrib.postgres.indexes.GinIndex(fields=['search_vector'], name='request_search_idx'),
        ),
        migrations.AddIndex(
            model_name='changerequest',
            index=models.Index(fields=['created_at', 'status'], name='request_created_idx'),
        ),
        migrations.AddIndex(
            model_name='changerequest',
            index=models.Index(fields=['applied_at'], name='request_applied_idx'),
        ),
    ]
