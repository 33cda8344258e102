"""Test-only database backend: flushing between transactional tests leaves the audit log alone,
and a flush that deadlocks with a test worker's beat task is tried again.

The audit table rejects TRUNCATE by design, so tests that commit (the Celery worker must see
their rows) keep appending to one chain; tests look events up by request id, never by count.

A module's real worker keeps running its embedded beat (the audit chainer every second, sweeps)
while a test ends: its row locks can meet the flush's TRUNCATE in a deadlock, which PostgreSQL
breaks by failing the flush. The flush is then run again (it is idempotent); any other error, or
a fifth deadlock, is raised.
"""

import time

from django.db import OperationalError
from django_prometheus.db.backends.postgresql import base

AUDIT_TABLES = {"audit_auditevent", "audit_audithead", "audit_auditarchive"}  # the archive manifests refuse it too
FLUSH_ATTEMPTS = 5


class DatabaseOperations(base.DatabaseWrapper.ops_class):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        kept = [t for t in tables if t not in AUDIT_TABLES]
        return super().sql_flush(style, kept, reset_sequences=reset_sequences, allow_cascade=allow_cascade)

    def execute_sql_flush(self, sql_list):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                return super().execute_sql_flush(sql_list)
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == FLUSH_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
