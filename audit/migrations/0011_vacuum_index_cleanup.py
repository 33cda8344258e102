"""Every vacuum of the log's table also vacuums its indexes (`vacuum_index_cleanup = on`).

Since PostgreSQL 14 a vacuum skips the index pass when fewer than 2% of the table's pages hold
dead rows: it leaves the dead rows' index entries, and the primary key's low end keeps every
chained event's dead placeholder entry (audit/0010). On a log that grows, 2% of its pages is a
number of dead entries that grows with it: after bench/scale.py's 10M-event build and a
`VACUUM ANALYZE`, 295,046 of them were left across 1,459 primary-key pages, and every `seq > 0` or
`seq < 0` condition (the log's pages, exports, verification) walked them in the planner: 2 ms of
planning per query, the audit pages 1.55-1.91x their 1% figures. With the option every vacuum
(every 100,000 dead versions, audit/0010) removes them, so the walk stays bounded by 0010's
threshold, not by the table's size; the price is reading the table's indexes once per vacuum."""

from django.db import migrations

FORWARD = "ALTER TABLE audit_auditevent SET (vacuum_index_cleanup = on)"
BACKWARD = "ALTER TABLE audit_auditevent RESET (vacuum_index_cleanup)"


class Migration(migrations.Migration):
    dependencies = [("audit", "0010_vacuum_often")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
