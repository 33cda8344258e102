"""The single head row exists from the start, so appends only ever UPDATE it."""

from django.db import migrations

FORWARD = "INSERT INTO audit_audithead (id, seq, hash) VALUES (1, 0, repeat('0', 64)) ON CONFLICT (id) DO NOTHING"


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]
    operations = [migrations.RunSQL(FORWARD, migrations.RunSQL.noop)]
