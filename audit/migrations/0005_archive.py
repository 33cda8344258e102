"""Monthly archives of the audit log (audit/archive.py): the manifest table, its guard, and the one
sanctioned DELETE on audit_auditevent.

- audit_auditarchive keeps every manifest: DELETE and TRUNCATE raise; an UPDATE may only set
  detached_at once, and deleted_at / deleted_by once and never before retain_until.
- audit_auditevent's DELETE guard (was audit_reject_change, migration 0002) lets a row go only
  when its seq lies in an archive that is recorded, verified and not deleted, and the row is
  older than the three whole months before the current one (the least online window: even a
  forged manifest row cannot take recent events). UPDATE and TRUNCATE still always raise.
"""

from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION audit_archive_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_auditarchive keeps every manifest: % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF ROW(NEW.id, NEW.period, NEW.first_seq, NEW.last_seq, NEW.count, NEW.first_ts, NEW.last_ts, NEW.prev_hash,
           NEW.last_hash, NEW.file_name, NEW.sha256, NEW.size_bytes, NEW.created_at, NEW.created_by,
           NEW.verified_at, NEW.retain_until)
       IS DISTINCT FROM
       ROW(OLD.id, OLD.period, OLD.first_seq, OLD.last_seq, OLD.count, OLD.first_ts, OLD.last_ts, OLD.prev_hash,
           OLD.last_hash, OLD.file_name, OLD.sha256, OLD.size_bytes, OLD.created_at, OLD.created_by,
           OLD.verified_at, OLD.retain_until) THEN
        RAISE EXCEPTION 'audit_auditarchive: a manifest is never changed (period %)', OLD.period
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.detached_at IS NOT NULL AND NEW.detached_at IS DISTINCT FROM OLD.detached_at THEN
        RAISE EXCEPTION 'audit_auditarchive: period % is already detached', OLD.period
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.deleted_at IS NOT NULL AND ROW(NEW.deleted_at, NEW.deleted_by) IS DISTINCT FROM ROW(OLD.deleted_at, OLD.deleted_by) THEN
        RAISE EXCEPTION 'audit_auditarchive: period % is already deleted', OLD.period
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND now() < OLD.retain_until THEN
        RAISE EXCEPTION 'audit_auditarchive: period % is retained until %', OLD.period, OLD.retain_until
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_archive_guard_row BEFORE UPDATE OR DELETE ON audit_auditarchive
    FOR EACH ROW EXECUTE FUNCTION audit_archive_guard();
CREATE TRIGGER audit_archive_guard_truncate BEFORE TRUNCATE ON audit_auditarchive
    FOR EACH STATEMENT EXECUTE FUNCTION audit_archive_guard();

CREATE OR REPLACE FUNCTION audit_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.ts < (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months') AT TIME ZONE 'UTC'
       AND EXISTS (SELECT 1 FROM audit_auditarchive a
                   WHERE OLD.seq BETWEEN a.first_seq AND a.last_seq AND a.deleted_at IS NULL) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_auditevent is append-only: DELETE of seq % is not allowed (no verified archive holds it)',
        OLD.seq USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER IF EXISTS audit_no_delete ON audit_auditevent;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_guard_delete();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS audit_no_delete ON audit_auditevent;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
DROP FUNCTION IF EXISTS audit_guard_delete();
DROP TRIGGER IF EXISTS audit_archive_guard_truncate ON audit_auditarchive;
DROP TRIGGER IF EXISTS audit_archive_guard_row ON audit_auditarchive;
DROP FUNCTION IF EXISTS audit_archive_guard();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_siem_cursor'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditArchive',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period', models.CharField(max_length=7, unique=True)),
                ('first_seq', models.BigIntegerField()),
                ('last_seq', models.BigIntegerField()),
                ('count', models.BigIntegerField()),
                ('first_ts', models.DateTimeField()),
                ('last_ts', models.DateTimeField()),
                ('prev_hash', models.CharField(max_length=64)),
                ('last_hash', models.CharField(max_length=64)),
                ('file_name', models.CharField(max_length=100)),
                ('sha256', models.CharField(max_length=64)),
                ('size_bytes', models.BigIntegerField()),
                ('created_at', models.DateTimeField()),
                ('created_by', models.CharField(max_length=150)),
                ('verified_at', models.DateTimeField()),
                ('retain_until', models.DateTimeField()),
                ('detached_at', models.DateTimeField(blank=True, null=True)),
                ('deleted_at', models.DateTimeField(blank=True, null=True)),
                ('deleted_by', models.CharField(blank=True, max_length=150)),
            ],
            options={
                'ordering': ['first_seq'],
                'constraints': [models.UniqueConstraint(fields=('first_seq',), name='audit_archive_first_seq_uniq'), models.CheckConstraint(condition=models.Q(('last_seq__gte', models.F('first_seq'))), name='audit_archive_range_ck')],
            },
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
