"""Test-only database backend: flushing between transactional tests leaves the audit log alone.

The audit table rejects TRUNCATE by design, so tests that commit (the Celery worker must see
their rows) keep appending to one chain; tests look events up by request id, never by count.
"""

from django_prometheus.db.backends.postgresql import base

AUDIT_TABLES = {"audit_auditevent", "audit_audithead", "audit_auditarchive"}  # the archive manifests refuse it too


class DatabaseOperations(base.DatabaseWrapper.ops_class):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        kept = [t for t in tables if t not in AUDIT_TABLES]
        return super().sql_flush(style, kept, reset_sequences=reset_sequences, allow_cascade=allow_cascade)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
