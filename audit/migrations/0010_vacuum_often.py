"""The log's table is vacuumed every 100,000 dead row versions instead of at 20% of the table.

Every chained event leaves its pending row version dead at the low end of the primary key (its
placeholder seq) until vacuum. The planner looks up that end of the index for any `seq > 0` or
`seq < 0` condition (the audit log's pages, exports, verification) and walks every dead entry to
find it: with autovacuum's default (20% of the table) a 10M-event log keeps up to 2M of them, and
after bench/scale.py's 10M-event build 1.65M cost 16 ms of planning per query (1 ms after a
VACUUM, which took 6.4 s there). At 100,000 the walk stays under a millisecond; a vacuum reads the
table's indexes once per 100,000 events (docs/audit.md "Appending")."""

from django.db import migrations

FORWARD = ("ALTER TABLE audit_auditevent SET (autovacuum_vacuum_scale_factor = 0, "
           "autovacuum_vacuum_threshold = 100000)")
BACKWARD = "ALTER TABLE audit_auditevent RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)"


class Migration(migrations.Migration):
    dependencies = [("audit", "0009_chain_format")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
