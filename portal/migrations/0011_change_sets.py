"""Change sets (#22, access as code): the requests one apply of a desired-state file filed together."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("portal", "0010_break_glass"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChangeSet",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("justification", models.TextField()),
                ("source", models.CharField(blank=True, help_text="the file's name, as the client gave it", max_length=200)),
                ("document_sha256", models.CharField(help_text="SHA-256 of the desired state as filed (JSON)", max_length=64)),
                ("document", models.JSONField(default=dict)),
                ("created_by", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="change_sets", to=settings.AUTH_USER_MODEL)),
                ("instance", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="change_sets", to="portal.instance")),
                ("team", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="change_sets", to="portal.team")),
            ],
            options={"ordering": ["-id"]},
        ),
        migrations.CreateModel(
            name="ChangeSetItem",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("position", models.PositiveSmallIntegerField()),
                ("op", models.CharField(choices=[("add", "add"), ("remove", "remove")], max_length=6)),
                ("change_set", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="items", to="portal.changeset")),
                ("request", models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name="change_set_item", to="portal.changerequest")),
            ],
            options={"ordering": ["change_set", "position"]},
        ),
        migrations.AddConstraint(
            model_name="changesetitem",
            constraint=models.UniqueConstraint(fields=("change_set", "position"), name="change_set_item_position"),
        ),
    ]
