"""Test-only database backend: flushing between transactional tests leaves the audit log alone,
empties only the tables that hold rows, and a flush that deadlocks with a test worker's beat task
is tried again.

The audit table rejects TRUNCATE by design, so tests that commit (the Celery worker must see
their rows) keep appending to one chain: a transactional test looks events up by request id,
never by count. The tests in a rolled-back transaction run before any transactional one on the
same database (pytest-django's order, kept under xdist by tests/fixtures/ordering.py), so they
see only the events of the migrations and their own.

Django's flush is one TRUNCATE of every table (~55): each table and each of its indexes gets new
files, whether or not it held a row, ~0.1-0.25 s a transactional test. After one, a handful of
tables hold a few rows. So the flush locks every table as TRUNCATE would (a worker's transaction
still writing is waited for, as before), asks which tables hold rows and DELETEs theirs, foreign
keys checked at commit (they are all DEFERRABLE), row triggers off (session_replication_role, as
TRUNCATE fires none per row). Every table is empty afterwards, as with Django's
flush; sequences go on as they did (TRUNCATE without RESTART IDENTITY); post_migrate runs as before.

A module's real worker keeps running its embedded beat (the audit chainer every second, sweeps)
while a test ends: its row locks can meet the flush's locks in a deadlock, which PostgreSQL
breaks by failing the flush. The flush is then run again (it is idempotent); any other error, or
a fifth deadlock, is raised.
"""

import time

from django.db import OperationalError, transaction
from django_prometheus.db.backends.postgresql import base
from psycopg import sql

AUDIT_TABLES = {"audit_auditevent", "audit_audithead", "audit_auditarchive"}  # the archive manifests refuse it too
FLUSH_ATTEMPTS = 5


class DatabaseOperations(base.DatabaseWrapper.ops_class):
    _flush: tuple[list[str], list[str]] | None = None  # (the statements sql_flush returned, their tables)

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        kept = [t for t in tables if t not in AUDIT_TABLES]
        statements = super().sql_flush(style, kept, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        # Only the plain flush (what transactional tests run) is narrowed; with sequences reset or
        # CASCADE, Django's statements run unchanged.
        self._flush = (statements, kept) if not (reset_sequences or allow_cascade) else None
        return statements

    def execute_sql_flush(self, sql_list):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                if self._flush is not None and self._flush[0] == sql_list:
                    return self._empty_tables_with_rows(self._flush[1])
                return super().execute_sql_flush(sql_list)
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == FLUSH_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)

    def _empty_tables_with_rows(self, tables: list[str]) -> None:
        """Leave `tables` empty, as one TRUNCATE of all of them would, touching only those with rows."""
        if not tables:
            return
        with transaction.atomic(using=self.connection.alias), self.connection.cursor() as cursor:
            raw = self.connection.connection  # psycopg's, to render the composed statements
            names = sql.SQL(", ").join(map(sql.Identifier, tables))
            cursor.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names).as_string(raw))
            cursor.execute(
                sql.SQL(" UNION ALL ")
                .join(
                    sql.SQL("SELECT {} WHERE EXISTS (SELECT FROM {})").format(sql.Literal(t), sql.Identifier(t))
                    for t in tables
                )
                .as_string(raw)
            )
            filled = [row[0] for row in cursor.fetchall()]
            # Foreign keys are checked at commit, when every referencing row is gone too.
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            # No trigger fires, as none would on TRUNCATE's rows: the requests' counters (portal 0022)
            # would otherwise record the deleted requests as deltas in a table emptied before them.
            cursor.execute("SET LOCAL session_replication_role = replica")
            for table in filled:
                cursor.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)).as_string(raw))


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
