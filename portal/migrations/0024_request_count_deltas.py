"""Scale (#23): the request counters' triggers append deltas instead of upserting the counters, and
a kept median's day has its UTC bounds.

0022's triggers upserted RequestCount and TeamRequestCount in the writer's statement, so a writer
held a slot's counter row to its commit; two transactions changing two statuses of one slot in
opposite orders (a submit that auto-approves: INSERT, then submitted -> queued; a reviewer's approval
of another request of the same 15 minutes: submitted -> queued in one statement) each waited for the
other: a deadlock. Now each statement appends its changes, one row per (slot, status, team), to
portal_requestcountdelta, which no writer updates: writers share no row. Readers sum the counters
and the deltas in one statement; fold_request_counts() (portal/selectors/dashboard.py, run by the
pages that read them) moves the deltas into the counters.

0023 dropped kept medians for the UTC date of applied_at and the days either side, so every apply
dropped yesterday's median; a kept day now has its UTC bounds, and only the days an applied_at
falls in are dropped (kept medians are a cache: 0024 empties them)."""

from django.db import migrations, models

# Static SQL, written out in full (no formatting into SQL).
FORWARD = """
DELETE FROM portal_requestmedianday;

CREATE OR REPLACE FUNCTION portal_request_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcountdelta (slot, status, team_id, n)
  SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, team_id, count(*)
  FROM new_rows GROUP BY 1, 2, 3;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION portal_request_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcountdelta (slot, status, team_id, n)
  SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, team_id, -count(*)
  FROM old_rows GROUP BY 1, 2, 3;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM portal_requestcount;
  DELETE FROM portal_teamrequestcount;
  DELETE FROM portal_requestcountdelta;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_median_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM new_rows WHERE status = 'applied' AND applied_at IS NOT NULL) THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING new_rows AS changed
    WHERE changed.status = 'applied' AND changed.applied_at >= kept.starts AND changed.applied_at < kept.ends;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_median_update() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION portal_request_median_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM old_rows WHERE status = 'applied' AND applied_at IS NOT NULL) THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING old_rows AS changed
    WHERE changed.status = 'applied' AND changed.applied_at >= kept.starts AND changed.applied_at < kept.ends;
  END IF;
  RETURN NULL;
END $$;
"""

# 0023's functions again (the count functions as 0023 left them: 0022's, with 0023's delete).
BACKWARD = """
CREATE OR REPLACE FUNCTION portal_request_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcount (slot, status, n)
  SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, count(*)
  FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
  INSERT INTO portal_teamrequestcount (team_id, n)
  SELECT team_id, count(*) FROM new_rows GROUP BY 1 ORDER BY 1
  ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO portal_requestcount (slot, status, n)
  SELECT slot, status, sum(n) FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, -1 AS n
    FROM old_rows
    UNION ALL
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, 1 AS n
    FROM new_rows
  ) AS delta
  GROUP BY slot, status HAVING sum(n) <> 0 ORDER BY slot, status
  ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
  INSERT INTO portal_teamrequestcount (team_id, n)
  SELECT team_id, sum(n) FROM (
    SELECT team_id, -1 AS n FROM old_rows UNION ALL SELECT team_id, 1 AS n FROM new_rows
  ) AS delta
  GROUP BY team_id HAVING sum(n) <> 0 ORDER BY team_id
  ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE portal_requestcount AS kept SET n = kept.n - gone.n FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, count(*) AS n
    FROM old_rows GROUP BY 1, 2
  ) AS gone
  WHERE kept.slot = gone.slot AND kept.status = gone.status;
  UPDATE portal_teamrequestcount AS kept SET n = kept.n - gone.n FROM (
    SELECT team_id, count(*) AS n FROM old_rows GROUP BY team_id
  ) AS gone
  WHERE kept.team_id = gone.team_id;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM portal_requestcount;
  DELETE FROM portal_teamrequestcount;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_median_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE days date[];
BEGIN
  SELECT array_agg(DISTINCT (applied_at AT TIME ZONE 'UTC')::date) INTO days
  FROM new_rows WHERE status = 'applied' AND applied_at IS NOT NULL;
  IF days IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING unnest(days) AS touched(day)
    WHERE kept.day BETWEEN touched.day - 1 AND touched.day + 1;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_median_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE days date[];
BEGIN
  SELECT array_agg(DISTINCT (applied_at AT TIME ZONE 'UTC')::date) INTO days FROM (
    (SELECT id, status, applied_at, created_at FROM old_rows
     EXCEPT SELECT id, status, applied_at, created_at FROM new_rows)
    UNION ALL
    (SELECT id, status, applied_at, created_at FROM new_rows
     EXCEPT SELECT id, status, applied_at, created_at FROM old_rows)
  ) AS changed
  WHERE status = 'applied' AND applied_at IS NOT NULL;
  IF days IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING unnest(days) AS touched(day)
    WHERE kept.day BETWEEN touched.day - 1 AND touched.day + 1;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION portal_request_median_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE days date[];
BEGIN
  SELECT array_agg(DISTINCT (applied_at AT TIME ZONE 'UTC')::date) INTO days
  FROM old_rows WHERE status = 'applied' AND applied_at IS NOT NULL;
  IF days IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
    DELETE FROM portal_requestmedianday AS kept USING unnest(days) AS touched(day)
    WHERE kept.day BETWEEN touched.day - 1 AND touched.day + 1;
  END IF;
  RETURN NULL;
END $$;

-- The deltas not yet folded, into the counters 0023 reads alone.
INSERT INTO portal_requestcount (slot, status, n)
SELECT slot, status, sum(n) FROM portal_requestcountdelta GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
ON CONFLICT (slot, status) DO UPDATE SET n = portal_requestcount.n + excluded.n;
INSERT INTO portal_teamrequestcount (team_id, n)
SELECT delta.team_id, sum(delta.n) FROM portal_requestcountdelta AS delta JOIN portal_team ON portal_team.id = delta.team_id
GROUP BY 1 HAVING sum(delta.n) <> 0 ORDER BY 1
ON CONFLICT (team_id) DO UPDATE SET n = portal_teamrequestcount.n + excluded.n;
DELETE FROM portal_requestmedianday;
"""


class Migration(migrations.Migration):

    dependencies = [
        ("portal", "0023_request_median_day"),
    ]

    operations = [
        migrations.CreateModel(
            name="RequestCountDelta",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slot", models.DateTimeField()),
                ("status", models.CharField(choices=[("submitted", "submitted"), ("approved", "approved"),
                                                     ("rejected", "rejected"), ("cancelled", "cancelled"),
                                                     ("queued", "queued"), ("running", "running"),
                                                     ("applied", "applied"), ("failed", "failed")],
                                            max_length=10)),
                ("team_id", models.BigIntegerField()),
                ("n", models.BigIntegerField()),
            ],
        ),
        # Kept medians are a cache: emptied (RunSQL below) before the bounds, which they lack, are required.
        migrations.RunSQL("DELETE FROM portal_requestmedianday;", migrations.RunSQL.noop),
        migrations.AddField(
            model_name="requestmedianday",
            name="starts",
            field=models.DateTimeField(default="2000-01-01T00:00:00Z"),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="requestmedianday",
            name="ends",
            field=models.DateTimeField(default="2000-01-01T00:00:00Z"),
            preserve_default=False,
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
