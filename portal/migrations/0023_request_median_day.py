"""Scale (#23): the dashboard's median time to apply of each closed day, kept once computed
(RequestMedianDay, portal/selectors/dashboard.py), so a dashboard computes the median of today's
applied requests only, not of every request applied in its 14 days.

A median does not add up from parts, so it is not counted as requests change (RequestCount) but
computed by the dashboard for a closed day it has not kept, and dropped by these triggers when a
request applied around that day changes: one whose old or new row is applied (with applied_at) and
whose status, applied_at or created_at differs. The days dropped are the UTC date of applied_at and
the days either side, which holds the local day of every zone (UTC-12 to UTC+14).

The dashboard fills under the exclusive advisory lock `hashtext('dbportal.dashboard.median_days')`
and these triggers drop under the shared one, both held to the end of the transaction: a filler
waits for the writers that changed applied requests to commit and then reads them (its query after
the lock sees them, at READ COMMITTED, the portal's level); a writer that comes during a fill waits
for it and then drops the days it just kept. No medians are kept here: the dashboard computes them.

It also replaces 0022's delete trigger function (below: a delete lowers only existing counters)."""

from django.db import migrations, models

# Static SQL, written out in full (no formatting into SQL).
FORWARD = """
CREATE FUNCTION portal_request_median_insert() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE FUNCTION portal_request_median_update() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE FUNCTION portal_request_median_delete() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE FUNCTION portal_request_median_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(hashtext('dbportal.dashboard.median_days'));
  DELETE FROM portal_requestmedianday;
  RETURN NULL;
END $$;

-- 0022's delete counted a deleted request by an upsert, which makes a counter row when the row is
-- gone: a DELETE of every counter and then of the requests (the test suite's flush) left rows of
-- negative counts, and a team's row behind a deleted team. A delete only lowers the counters
-- there are (UPDATE, row-locked, n = n - k: still no lost update).
CREATE OR REPLACE FUNCTION portal_request_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE portal_requestcount AS kept SET n = kept.n - gone.n FROM (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS slot, status, count(*) AS n
    FROM old_rows GROUP BY 1, 2 ORDER BY 1, 2
  ) AS gone
  WHERE kept.slot = gone.slot AND kept.status = gone.status;
  UPDATE portal_teamrequestcount AS kept SET n = kept.n - gone.n FROM (
    SELECT team_id, count(*) AS n FROM old_rows GROUP BY team_id ORDER BY team_id
  ) AS gone
  WHERE kept.team_id = gone.team_id;
  RETURN NULL;
END $$;

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

BACKWARD = """
CREATE OR REPLACE FUNCTION portal_request_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
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
DROP TRIGGER request_median_insert ON portal_changerequest;
DROP TRIGGER request_median_update ON portal_changerequest;
DROP TRIGGER request_median_delete ON portal_changerequest;
DROP TRIGGER request_median_truncate ON portal_changerequest;
DROP FUNCTION portal_request_median_insert();
DROP FUNCTION portal_request_median_update();
DROP FUNCTION portal_request_median_delete();
DROP FUNCTION portal_request_median_truncate();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("portal", "0022_request_count"),
    ]

    operations = [
        migrations.CreateModel(
            name="RequestMedianDay",
            fields=[
                ("pk", models.CompositePrimaryKey("zone", "day", blank=True, editable=False, primary_key=True,
                                                  serialize=False)),
                ("zone", models.CharField(max_length=64)),
                ("day", models.DateField()),
                ("applied", models.IntegerField()),
                ("median", models.FloatField(blank=True, null=True)),
            ],
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
