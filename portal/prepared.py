"""Prepared statements on Django's connection, for the hottest fixed statements: record()'s INSERT
of one event, the audit chainer's, and the API token's lookup (every API call).

Django's cursors bind values on the client and never prepare, so a fixed statement is parsed and
planned again on every call (the token's: 0.2-0.45 ms of planning for 0.1 ms of running). A
prepared statement lives on its connection, so the portal's database must be reached directly or
through a pooler in session mode (README, "Running at scale").
"""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
from django.db import connection


class PreparedCursor(psycopg.Cursor):
    """Server-side binding, every statement prepared: parsed and planned once per connection (psycopg
    keeps track of which connection has which statement)."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> Any:
        return super().execute(query, params, prepare=True, binary=binary)


# Django opens its connections with prepare_threshold None (nothing prepared, for poolers in
# transaction mode; the portal's database is reached directly). Its ORM cursors bind on the client
# and never prepare whatever the threshold; a threshold this high keeps any other server-binding
# cursor from preparing on its own, while PreparedCursor's explicit prepare=True takes effect.
_NO_AUTOMATIC_PREPARE = 2**31 - 1

# One cursor per database connection, kept open: a new psycopg cursor sets up its loaders (the
# timestamp's looks up the time zone) each time otherwise.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection, PreparedCursor] = weakref.WeakKeyDictionary()


def prepared_cursor() -> Any:
    """A cursor of Django's connection (this thread's) whose statements are prepared, wrapped as
    Django wraps its own: each statement is one query in Django's query log (the tests' query-count
    pins) and its database errors are Django's. Not to be closed by the caller (it is reused)."""
    connection.ensure_connection()
    raw = connection.connection
    cursor = _prepared.get(raw)
    if cursor is None or cursor.closed:
        if raw.prepare_threshold is None:
            raw.prepare_threshold = _NO_AUTOMATIC_PREPARE
        cursor = _prepared[raw] = PreparedCursor(raw)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)
