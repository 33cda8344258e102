"""RecordedEvent: the proxy audit.services.record() returns (its seq is assigned lazily; audit/models.py)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0006_keyed_chain"),
    ]

    operations = [
        migrations.CreateModel(
            name="RecordedEvent",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("audit.auditevent",),
        ),
    ]
