"""Scale (#23): the dashboard's and the team list's request counts, and the median time to apply of
each closed day, kept by triggers on portal_changerequest instead of counted over every request
on every page (portal/models/request.py RequestCount, RequestCountDelta, TeamRequestCount,
RequestMedianDay; portal/selectors/dashboard.py reads them).

One migration for what was built in three steps (0022 upserted counters, 0023 kept medians, 0024
replaced the upserts with deltas after a deadlock): none of them reached a release, so `replaces`
marks this one applied where all three are, and a new database runs only this.

Counts. Statement-level triggers with transition tables append, in the writer's transaction, one
RequestCountDelta row per (15-minute UTC slot, status, team) a statement changes; no writer updates
a shared row, so writers never wait for each other (upserting the counters in the writer's
statement held a slot's row to the commit, and two transactions changing two statuses of one slot
in opposite orders deadlocked). An UPDATE appends its new rows minus its old ones: only rows whose
slot, status or team changed leave a non-zero difference (updated_at, dry runs and details append
nothing). Readers sum the counters and the deltas in one statement; fold_request_counts() moves
the deltas into the counters (`n = n + excluded.n`: no change is lost). TRUNCATE empties all three.

Medians. A median does not add up from parts, so the dashboard computes a closed day's median once
and keeps it with the day's UTC bounds; these triggers drop the kept days an applied request's
applied_at falls in when such a request is inserted, deleted, or changes status, applied_at or
created_at. The dashboard fills under the exclusive advisory lock
`hashtext('dbportal.dashboard.median_days')` and the triggers drop under the shared one, both held
to the end of the transaction: a filler waits for the writers that changed applied requests to
commit and then reads them (READ COMMITTED, the portal's level); a writer that comes during a fill
waits for it and then drops the days it just kept.

The backfill runs after the triggers are created, in the migration's transaction: CREATE TRIGGER
locks the requests table against writes until the commit, so no request is counted twice or missed
(on a large table, writes wait for two grouped scans: docs/operations.md)."""

import django.db.models.deletion
from django.db import migrations, models

STATUS_CHOICES = [("submitted", "submitted"), ("approved", "approved"), ("rejected", "rejected"),
                  ("cancelled", "cancelled"), ("queued", "queued"), ("running", "running"),
                  ("applied", "applied"), ("failed", "failed")]

# Static SQL, written out in full (no formatting into SQL). The slot is
# date_bin('15 minutes', created_at, 2000-01-01 UTC): portal/models/request.py COUNT_SLOT.
FORWARD = """
CREATE FUNCTION portal_request_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcountdelta (slot, status, team_id, n)
  SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, team_id, count(*)
  FROM new_rows GROUP BY 1, 2, 3;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcountdelta (slot, status, team_id, n)
  SELECT slot, status, team_id, sum(n) FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, team_id, -1 AS n
    FROM old_rows
    UNION ALL
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, team_id, 1 AS n
    FROM new_rows
  ) AS delta
  GROUP BY slot, status, team_id HAVING sum(n) <> 0;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcountdelta (slot, status, team_id, n)
  SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, team_id, -count(*)
  FROM old_rows GROUP BY 1, 2, 3;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM portal_requestcount;
  DELETE FROM portal_teamrequestcount;
  DELETE FROM portal_requestcountdelta;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_median_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM new_rows WHERE status = 'applied' AND applied_at IS NOT NULL) THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING new_rows AS changed
    WHERE changed.status = 'applied' AND changed.applied_at >= kept.starts AND changed.applied_at < kept.ends;
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_median_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE moments timestamptz[];
BEGIN
  SELECT array_agg(DISTINCT applied_at) INTO moments FROM (
    (SELECT id, status, applied_at, created_at FROM old_rows
     EXCEPT SELECT id, status, applied_at, created_at FROM new_rows)
    UNION ALL
    (SELECT id, status, applied_at, created_at FROM new_rows
     EXCEPT SELECT id, status, applied_at, created_at FROM old_rows)
  ) AS changed
  WHERE status = 'applied' AND applied_at IS NOT NULL;
  IF moments IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING unnest(moments) AS changed(applied_at)
    WHERE changed.applied_at >= kept.starts AND changed.applied_at < kept.ends;
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_median_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM old_rows WHERE status = 'applied' AND applied_at IS NOT NULL) THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING old_rows AS changed
    WHERE changed.status = 'applied' AND changed.applied_at >= kept.starts AND changed.applied_at < kept.ends;
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION portal_request_median_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
  DELETE FROM portal_requestmedianday;
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

CREATE TRIGGER request_median_insert AFTER INSERT ON portal_changerequest
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION portal_request_median_insert();
CREATE TRIGGER request_median_update AFTER UPDATE ON portal_changerequest
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION portal_request_median_update();
CREATE TRIGGER request_median_delete AFTER DELETE ON portal_changerequest
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION portal_request_median_delete();
CREATE TRIGGER request_median_truncate AFTER TRUNCATE ON portal_changerequest
  FOR EACH STATEMENT EXECUTE FUNCTION portal_request_median_truncate();
"""

# Every request filed so far, straight into the counters (tests/portal/test_dashboard_counts.py runs
# it again against a direct count).
BACKFILL = """
INSERT INTO portal_requestcount (slot, status, n)
SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, count(*)
FROM portal_changerequest GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
INSERT INTO portal_teamrequestcount (team_id, n)
SELECT team_id, count(*) FROM portal_changerequest GROUP BY 1 ORDER BY 1
ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
"""

BACKWARD = """
DROP TRIGGER request_count_insert ON portal_changerequest;
DROP TRIGGER request_count_update ON portal_changerequest;
DROP TRIGGER request_count_delete ON portal_changerequest;
DROP TRIGGER request_count_truncate ON portal_changerequest;
DROP TRIGGER request_median_insert ON portal_changerequest;
DROP TRIGGER request_median_update ON portal_changerequest;
DROP TRIGGER request_median_delete ON portal_changerequest;
DROP TRIGGER request_median_truncate ON portal_changerequest;
DROP FUNCTION portal_request_count_insert();
DROP FUNCTION portal_request_count_update();
DROP FUNCTION portal_request_count_delete();
DROP FUNCTION portal_request_count_truncate();
DROP FUNCTION portal_request_median_insert();
DROP FUNCTION portal_request_median_update();
DROP FUNCTION portal_request_median_delete();
DROP FUNCTION portal_request_median_truncate();
"""


class Migration(migrations.Migration):

    replaces = [
        ("portal", "0022_request_count"),
        ("portal", "0023_request_median_day"),
        ("portal", "0024_request_count_deltas"),
    ]

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
                ("status", models.CharField(choices=STATUS_CHOICES, max_length=10)),
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
        migrations.CreateModel(
            name="RequestCountDelta",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slot", models.DateTimeField()),
                ("status", models.CharField(choices=STATUS_CHOICES, max_length=10)),
                ("team_id", models.BigIntegerField()),
                ("n", models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="RequestMedianDay",
            fields=[
                ("pk", models.CompositePrimaryKey("zone", "day", blank=True, editable=False, primary_key=True,
                                                  serialize=False)),
                ("zone", models.CharField(max_length=64)),
                ("day", models.DateField()),
                ("starts", models.DateTimeField()),
                ("ends", models.DateTimeField()),
                ("applied", models.IntegerField()),
                ("median", models.FloatField(blank=True, null=True)),
            ],
        ),
        migrations.RunSQL(FORWARD + BACKFILL, BACKWARD),
    ]
