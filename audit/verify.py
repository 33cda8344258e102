"""Verification of the chain: recompute every link, streaming, and name the first broken seq.

Rows are read with one COPY ... TO STDOUT, parsed row by row, so memory stays flat at any
size. The head row is read first and the COPY stops at its seq: every row up to the head's
seq had committed when the head was read, so appends running meanwhile neither break nor
slow the check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection
from psycopg import sql

from audit.chain import GENESIS_HASH, TS_SQL, canonical

# Columns in CANONICAL_FIELDS order, then prev_hash and hash; jsonb as text (parsed below).
_COPY = sql.SQL(
    "COPY (SELECT seq, {ts}, actor, host(actor_ip), action, object_type, object_id, instance, "
    "database, statement, request_id, approvers::text, outcome, details::text, prev_hash, hash "
    "FROM audit_auditevent WHERE seq <= %s ORDER BY seq) TO STDOUT"
).format(ts=sql.SQL(TS_SQL))
_TYPES = ["int8", "text", "text", "text", "text", "text", "text", "text", "text", "text", "int8", "text", "text",
          "text", "text", "text"]


@dataclass
class Verification:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json(text: str, cache: dict[str, Any] = {"{}": {}, "[]": []}) -> Any:  # noqa: B006 - a constant cache
    value = cache.get(text)
    if value is None:
        return json.loads(text)
    return type(value)()


def _read_head(cursor) -> tuple[int, str]:
    cursor.execute("SELECT seq, hash FROM audit_audithead WHERE id = 1")
    row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def verify_chain() -> Verification:
    """Recompute the whole chain. Does not record anything (see services.verify_and_record)."""
    sha256 = hashlib.sha256
    with connection.cursor() as django_cursor:
        head_seq, head_hash = _read_head(django_cursor)
        cursor = django_cursor.cursor  # the psycopg cursor, for COPY
        expected_seq = 1
        prev_hash = GENESIS_HASH
        events = 0
        broken: int | None = None
        problem = ""
        with cursor.copy(_COPY, (head_seq,)) as copy:
            copy.set_types(_TYPES)
            for row in copy.rows():
                events += 1
                if broken is not None:
                    continue  # drain the COPY; the count still tells how many events there are
                seq = row[0]
                if seq != expected_seq:
                    broken, problem = expected_seq, f"gap: seq {expected_seq} is missing (next is {seq})"
                    continue
                if row[14] != prev_hash:
                    broken, problem = seq, f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}"
                    continue
                body = {
                    "seq": seq, "ts": row[1], "actor": row[2], "actor_ip": row[3], "action": row[4],
                    "object_type": row[5], "object_id": row[6], "instance": row[7], "database": row[8],
                    "statement": row[9], "request_id": row[10], "approvers": _json(row[11]), "outcome": row[12],
                    "details": _json(row[13]),
                }
                computed = sha256((prev_hash + "\n" + canonical(body)).encode("utf-8")).hexdigest()
                if computed != row[15]:
                    broken, problem = seq, f"seq {seq}: the event's content does not match its hash (altered)"
                    continue
                prev_hash = row[15]
                expected_seq = seq + 1
    if broken is None:
        last_seq = expected_seq - 1
        if last_seq != head_seq:
            broken, problem = last_seq + 1, f"head says seq {head_seq} but the log ends at seq {last_seq}"
        elif prev_hash != head_hash:
            broken, problem = head_seq, f"head hash does not match the hash of seq {head_seq}"
    return Verification(ok=broken is None, events=events, head_seq=head_seq, head_hash=head_hash,
                        first_broken_seq=broken, problem=problem)
