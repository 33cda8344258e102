"""Bulk append for benchmarks and test fixtures: many events through one COPY, chained in Python.

Not for application code (which goes through audit.services.record()): it exists so a bench
or a test can build a log of a million events in seconds. It keeps every invariant of the
log: it locks the head row, continues the chain from it, and moves the head in the same
transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from audit.chain import CANONICAL_FIELDS, canonical, format_ts, json_safe

_COLUMNS = ("seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance", "database",
            "statement", "request_id", "approvers", "outcome", "details", "prev_hash", "hash")


def bulk_append(events: Iterable[dict[str, Any]], *, start: datetime, step: timedelta = timedelta(milliseconds=1)) -> int:
    """Append `events` (dicts of CANONICAL_FIELDS minus seq/ts) with ts = start, start+step, ...

    Returns how many were appended.
    """
    count = 0
    with transaction.atomic(), connection.cursor() as django_cursor:
        django_cursor.execute("SELECT seq, hash FROM audit_audithead WHERE id = 1 FOR UPDATE")
        seq, prev_hash = django_cursor.fetchone()
        copy_sql = "COPY audit_auditevent (" + ", ".join(_COLUMNS) + ") FROM STDIN"
        with django_cursor.cursor.copy(copy_sql) as copy:
            ts = start
            for given in events:
                seq += 1
                event = {field: given.get(field, "") for field in CANONICAL_FIELDS}
                event.update(seq=seq, ts=format_ts(ts), actor_ip=given.get("actor_ip"),
                             request_id=given.get("request_id"), approvers=list(given.get("approvers") or []),
                             details=json_safe(given.get("details") or {}))
                digest = hashlib.sha256((prev_hash + "\n" + canonical(event)).encode("utf-8")).hexdigest()
                copy.write_row((
                    seq, event["ts"], event["actor"], event["actor_ip"], event["action"], event["object_type"],
                    event["object_id"], event["instance"], event["database"], event["statement"],
                    event["request_id"], json.dumps(event["approvers"]), event["outcome"],
                    json.dumps(event["details"]), prev_hash, digest,
                ))
                prev_hash = digest
                ts += step
                count += 1
        django_cursor.execute("UPDATE audit_audithead SET seq = %s, hash = %s WHERE id = 1", [seq, prev_hash])
    return count
