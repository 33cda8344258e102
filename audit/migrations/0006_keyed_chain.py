"""Keyed chain and batched chaining (docs/audit.md, "Keyed chain" and "Appending").

- `key_id` on events and on the head: which key's HMAC the hash is ("" = plain SHA-256, the
  events chained before this migration, which stay verifiable as they are);
- `audit_pending_seq`: record() inserts an event un-chained, with a negative placeholder seq
  (PENDING_BASE + nextval), inside the business transaction and without the head lock;
- the UPDATE guard lets exactly one change through: the chainer's one-time assignment of the
  final seq, prev_hash, hash and key id to a pending row (its ts may only move forward, so ts
  never decreases with seq); every other UPDATE, DELETE and TRUNCATE is still refused.
"""

from django.db import migrations, models

FORWARD = """
CREATE SEQUENCE IF NOT EXISTS audit_pending_seq;
CREATE OR REPLACE FUNCTION audit_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq < 0 AND NEW.seq > 0 AND OLD.hash = '' AND OLD.prev_hash = '' AND OLD.key_id = ''
       AND length(NEW.hash) = 64 AND length(NEW.prev_hash) = 64 AND NEW.ts >= OLD.ts
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
DROP TRIGGER IF EXISTS audit_no_update ON audit_auditevent;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_guard_update();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS audit_no_update ON audit_auditevent;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
DROP FUNCTION IF EXISTS audit_guard_update();
DROP SEQUENCE IF EXISTS audit_pending_seq;
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_archive")]
    operations = [
        migrations.AddField(model_name="auditevent", name="key_id",
                            field=models.CharField(blank=True, db_default="", max_length=16)),
        migrations.AddField(model_name="audithead", name="key_id",
                            field=models.CharField(blank=True, db_default="", max_length=16)),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
