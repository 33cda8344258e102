"""The pending bound (docs/audit.md, "Appending"): where the chainer's pending scan starts.

Every chained event leaves its pending row version, dead, at the low end of the primary key until
vacuum; a scan from the first pending placeholder reads them all on every chainer run. The head
row keeps `pending_from` (no pending event, committed or not, has a placeholder below it) and the
mark the chainer raises it to once every transaction that could hold a lower placeholder has ended
(`mark_placeholder`, `mark_xid`). NULL everywhere at first: the scan starts at the first placeholder
until the chainer has taken and passed its first mark.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_recordedevent")]

    operations = [
        migrations.AddField(model_name="audithead", name="pending_from", field=models.BigIntegerField(null=True)),
        migrations.AddField(model_name="audithead", name="mark_placeholder", field=models.BigIntegerField(null=True)),
        migrations.AddField(model_name="audithead", name="mark_xid", field=models.BigIntegerField(null=True)),
    ]
