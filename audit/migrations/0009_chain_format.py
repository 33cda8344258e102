"""Chain format 2 (audit/chain.py, docs/audit.md "Canonical form"): each event says which form its
hash covers. Events already in the log keep format 1 (the column's default); the chainer writes
format 2 from now on, as part of its one-time assignment to a pending row, which the UPDATE guard
now lets through with a format of 1 or 2 (every other UPDATE, DELETE and TRUNCATE is still refused,
and a chained row's format can never change)."""

from django.db import migrations, models

GUARD = """
CREATE OR REPLACE FUNCTION audit_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq < 0 AND NEW.seq > 0 AND OLD.hash = '' AND OLD.prev_hash = '' AND OLD.key_id = ''
       AND length(NEW.hash) = 64 AND length(NEW.prev_hash) = 64 AND NEW.ts >= OLD.ts
       AND NEW.chain_format IN (1, 2)
       AND (NEW.actor, NEW.actor_ip, NEW.action, NEW.object_type, NEW.object_id, NEW.instance,
            NEW.database, NEW.statement, NEW.request_id, NEW.approvers, NEW.outcome, NEW.details)
           IS NOT DISTINCT FROM
           (OLD.actor, OLD.actor_ip, OLD.action, OLD.object_type, OLD.object_id, OLD.instance,
            OLD.database, OLD.statement, OLD.request_id, OLD.approvers, OLD.outcome, OLD.details)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_auditevent is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""

# 0006's guard, which knew no format (the column is dropped with it going back).
GUARD_BEFORE = GUARD.replace("       AND NEW.chain_format IN (1, 2)\n", "")


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_pending_bound")]
    operations = [
        migrations.AddField(model_name="auditevent", name="chain_format",
                            field=models.SmallIntegerField(db_default=1)),
        migrations.RunSQL(GUARD, GUARD_BEFORE),
    ]
