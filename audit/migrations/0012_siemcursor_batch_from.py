"""SiemCursor.batch_from: the cursor before the last acknowledged batch (audit/siem.py sends that batch
again to a syslog collector on the first failure after it). A column with a constant default: instant."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0011_vacuum_index_cleanup")]
    operations = [
        migrations.AddField(model_name="siemcursor", name="batch_from", field=models.BigIntegerField(default=0)),
    ]
