"""Scale (#23): requests per 15-minute slot (UTC) and current status, and per team, kept by
triggers: the dashboard's 14-day chart sums at most 14 x 96 slots per status instead of counting
every request filed in those 14 days, and the admin's team list reads one row per team instead of
counting every request of each team (portal/models/request.py RequestCount, TeamRequestCount).

The triggers are statement-level with transition tables: one upsert per counter a statement
touches, in key order (a bulk insert or update adds its rows per counter, and two statements lock
the same counters in the same order), each `n = n + excluded.n` so concurrent writers add up
instead of overwriting each other. An UPDATE subtracts its old rows and adds its new ones: only
rows whose slot, status or team changed leave a non-zero difference, and no counter is locked
for the others (updated_at, dry runs, details).

The backfill runs after the triggers are created, in the migration's transaction: CREATE TRIGGER
locks the requests table against writes until the commit, so no request is counted twice or
missed (on a large table, writes wait for two grouped scans: docs/operations.md)."""

import django.db.models.deletion
from django.db import migrations, models

# Static SQL, written out in full (no formatting into SQL). The slot is
# date_bin('15 minutes', created_at, 2000-01-01 UTC): portal/models/request.py COUNT_SLOT.
FORWARD = """
CREATE FUNCTION portal_request_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcount (slot, status, n)
  SELECT slot, status, sum(n) FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, 1 AS n FROM new_rows
  ) AS delta
  GROUP BY slot, status HAVING sum(n) <> 0
  ORDER BY slot, status
  ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
  INSERT INTO portal_teamrequestcount (team_id, n)
  SELECT team_id, sum(n) FROM (
    SELECT team_id, 1 AS n FROM new_rows
  ) AS delta
  GROUP BY team_id HAVING sum(n) <> 0
  ORDER BY team_id
  ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcount (slot, status, n)
  SELECT slot, status, sum(n) FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, -1 AS n FROM old_rows
    UNION ALL
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, 1 AS n FROM new_rows
  ) AS delta
  GROUP BY slot, status HAVING sum(n) <> 0
  ORDER BY slot, status
  ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
  INSERT INTO portal_teamrequestcount (team_id, n)
  SELECT team_id, sum(n) FROM (
    SELECT team_id, -1 AS n FROM old_rows
    UNION ALL
    SELECT team_id, 1 AS n FROM new_rows
  ) AS delta
  GROUP BY team_id HAVING sum(n) <> 0
  ORDER BY team_id
  ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcount (slot, status, n)
  SELECT slot, status, sum(n) FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, -1 AS n FROM old_rows
  ) AS delta
  GROUP BY slot, status HAVING sum(n) <> 0
  ORDER BY slot, status
  ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
  INSERT INTO portal_teamrequestcount (team_id, n)
  SELECT team_id, sum(n) FROM (
    SELECT team_id, -1 AS n FROM old_rows
  ) AS delta
  GROUP BY team_id HAVING sum(n) <> 0
  ORDER BY team_id
  ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM portal_requestcount;
  DELETE FROM portal_teamrequestcount;
  RETURN NULL;
END $$;

CREATE TRIGGER request_count_insert AFTER INSERT ON portal_changerequest
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION portal_request_count_insert();
CREATE TRIGGER request_count_update AFTER UPDATE ON portal_changerequest
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION portal_request_count_update();
CREATE TRIGGER request_count_delete AFTER DELETE ON portal_changerequest
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION portal_request_count_delete();
CREATE TRIGGER request_count_truncate AFTER TRUNCATE ON portal_changerequest
  FOR EACH STATEMENT EXECUTE FUNCTION portal_request_count_truncate();
"""

# Every request filed so far (tests/portal/test_dashboard_counts.py runs it again against a direct count).
BACKFILL = """
INSERT INTO portal_requestcount (slot, status, n)
SELECT slot, status, sum(n) FROM (
  SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, 1 AS n FROM portal_changerequest
) AS delta
GROUP BY slot, status HAVING sum(n) <> 0
ORDER BY slot, status
ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
INSERT INTO portal_teamrequestcount (team_id, n)
SELECT team_id, sum(n) FROM (
  SELECT team_id, 1 AS n FROM portal_changerequest
) AS delta
GROUP BY team_id HAVING sum(n) <> 0
ORDER BY team_id
ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
"""

BACKWARD = """
DROP TRIGGER request_count_insert ON portal_changerequest;
DROP TRIGGER request_count_update ON portal_changerequest;
DROP TRIGGER request_count_delete ON portal_changerequest;
DROP TRIGGER request_count_truncate ON portal_changerequest;
DROP FUNCTION portal_request_count_insert();
DROP FUNCTION portal_request_count_update();
DROP FUNCTION portal_request_count_delete();
DROP FUNCTION portal_request_count_truncate();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("portal", "0021_request_pending_idx"),
    ]

    operations = [
        migrations.CreateModel(
            name="RequestCount",
            fields=[
                ("pk", models.CompositePrimaryKey("slot", "status", blank=True, editable=False, primary_key=True,
                                                  serialize=False)),
                ("slot", models.DateTimeField()),
                ("status", models.CharField(choices=[("submitted", "submitted"), ("approved", "approved"),
                                                     ("rejected", "rejected"), ("cancelled", "cancelled"),
                                                     ("queued", "queued"), ("running", "running"),
                                                     ("applied", "applied"), ("failed", "failed")],
                                            max_length=10)),
                ("n", models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="TeamRequestCount",
            fields=[
                ("team", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                              related_name="+", serialize=False, to="portal.team")),
                ("n", models.BigIntegerField()),
            ],
        ),
        migrations.RunSQL(FORWARD + BACKFILL, BACKWARD),
    ]
