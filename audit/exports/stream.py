"""CSV and JSON Lines straight from PostgreSQL: COPY ... TO STDOUT, re-chunked, never buffered whole."""

from __future__ import annotations

from collections.abc import Iterator

from django.db import connection

from audit.selectors import AuditFilters, export_copy_sql

CHUNK_BYTES = 256 * 1024
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8",
                 "pdf": "application/pdf"}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "pdf": "pdf"}


def filename(filters: AuditFilters, export_format: str) -> str:
    return f"audit_{filters.period_label()}.{EXTENSIONS[export_format]}"


def stream_copy(filters: AuditFilters, export_format: str) -> Iterator[bytes]:
    """Yield the export in chunks of about CHUNK_BYTES while PostgreSQL produces it.

    COPY hands over one row per read; joining rows into larger chunks keeps the per-chunk
    cost of the WSGI server low without holding more than one chunk in memory.
    """
    statement, params = export_copy_sql(filters, export_format)
    with connection.cursor() as django_cursor:
        with django_cursor.cursor.copy(statement, params) as copy:
            buffer = bytearray()
            for data in copy:
                buffer += data
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
            if buffer:
                yield bytes(buffer)
