"""Verification of the chain: recompute every link, streaming, and name the first broken seq.

Rows are read with one COPY ... TO STDOUT and checked line by line, so memory stays flat at
any size. The head row is read first and the COPY stops at its seq: every row up to the head's
seq had committed when the head was read, so appends running meanwhile neither break nor slow
the check.

Speed: PostgreSQL renders each event's canonical form (a jsonb object as text, docs/audit.md)
while Python hashes the previous line, so two cores work in parallel and Python only runs
SHA-256 over bytes. audit.chain.canonical() renders the same text on the way in (record), and
tests pin that both renderings agree byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from django.db import connection
from psycopg import sql

from audit.chain import GENESIS_HASH, TS_SQL
from audit.models import AuditArchive, AuditEvent, AuditHead

# One line per event: seq, prev_hash, hash, canonical form. The canonical form is the jsonb text
# of the event object; its top-level keys are fixed, so their jsonb order (length, then bytes) is
# written out here and only `details` and `approvers` go through jsonb's own output: about three
# times cheaper for the server than jsonb_build_object(...)::text, byte for byte the same (tests).
# CSV mode with a quote and a delimiter that jsonb text never holds raw: lines arrive as is.
_COPY = sql.SQL("""
COPY (
SELECT seq, prev_hash, hash,
       '{{"ts": "' || {ts} || '", "seq": ' || seq::text
    || ', "actor": ' || to_json(actor)::text || ', "action": ' || to_json(action)::text
    || ', "details": ' || details::text || ', "outcome": ' || to_json(outcome)::text
    || ', "actor_ip": ' || coalesce(to_json(host(actor_ip))::text, 'null')
    || ', "database": ' || to_json(database)::text || ', "instance": ' || to_json(instance)::text
    || ', "approvers": ' || approvers::text || ', "object_id": ' || to_json(object_id)::text
    || ', "statement": ' || to_json(statement)::text
    || ', "request_id": ' || coalesce(request_id::text, 'null')
    || ', "object_type": ' || to_json(object_type)::text || '}}'
FROM {events}
WHERE seq BETWEEN %s AND %s
ORDER BY seq
) TO STDOUT (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')
""").format(ts=sql.SQL(TS_SQL), events=sql.Identifier(AuditEvent._meta.db_table))

# The same text the general way, for the test that pins the two together.
CANONICAL_SQL = sql.SQL("""
SELECT jsonb_build_object(
    'seq', seq, 'ts', {ts}, 'actor', actor, 'actor_ip', host(actor_ip), 'action', action,
    'object_type', object_type, 'object_id', object_id, 'instance', instance, 'database', database,
    'statement', statement, 'request_id', request_id, 'approvers', approvers, 'outcome', outcome,
    'details', details)::text
FROM {events} WHERE seq = %s
""").format(ts=sql.SQL(TS_SQL), events=sql.Identifier(AuditEvent._meta.db_table))


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


_READ_HEAD = sql.SQL("SELECT seq, hash FROM {head} WHERE id = 1").format(
    head=sql.Identifier(AuditHead._meta.db_table)).as_string(None)


def _read_head(cursor) -> tuple[int, str]:
    cursor.execute(_READ_HEAD)
    row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def _lines(copy) -> Any:
    """COPY data as whole lines, without the newline. libpq hands over one row per read; the
    buffered path only runs if that ever changes."""
    pending = b""
    for data in copy:
        chunk = bytes(data)
        if not pending and chunk.endswith(b"\n") and chunk.find(b"\n") == len(chunk) - 1:
            yield chunk[:-1]
            continue
        *complete, pending = (pending + chunk).split(b"\n")
        yield from complete
    if pending:
        yield pending


@dataclass
class _Range:
    """What one COPY over seq lo..hi found; links across ranges are checked when combining."""

    lo: int
    events: int = 0
    first_prev: bytes = b""
    last_hash: bytes = b""
    last_seq: int = 0
    broken: int | None = None
    problem: str = ""


def _check(lines: Any, lo: int, prev_hash: bytes | None) -> _Range:
    """Check seq continuity, links and hashes of consecutive lines starting at seq `lo`.

    With prev_hash None the first line's own prev_hash is trusted here and checked by the caller.
    """
    sha256 = hashlib.sha256
    found = _Range(lo=lo)
    expected_seq = lo
    for line in lines:
        found.events += 1
        if found.broken is not None:
            continue  # drain the COPY; the count still tells how many events there are
        seq_text, stored_prev, stored_hash, text = line.split(b"\x02")
        seq = int(seq_text)
        if seq != expected_seq:
            found.broken, found.problem = expected_seq, f"gap: seq {expected_seq} is missing (next is {seq})"
            continue
        if prev_hash is None:
            found.first_prev = prev_hash = stored_prev
        elif stored_prev != prev_hash:
            found.broken, found.problem = seq, f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}"
            continue
        if sha256(prev_hash + b"\n" + text).hexdigest().encode() != stored_hash:
            found.broken, found.problem = seq, f"seq {seq}: the event's content does not match its hash (altered)"
            continue
        prev_hash = stored_hash
        found.last_hash, found.last_seq = stored_hash, seq
        expected_seq = seq + 1
    return found


def _copy_range(cursor, lo: int, hi: int, prev_hash: bytes | None) -> _Range:
    with cursor.copy(_COPY, (lo, hi)) as copy:
        return _check(_lines(copy), lo, prev_hash)


def _parallel(first_seq: int, head_seq: int, workers: int, first_prev: bytes) -> list[_Range]:
    """Split first_seq..head_seq into `workers` ranges, each read by its own connection and server process."""
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    size = -(-(head_seq - first_seq + 1) // workers)
    bounds = [(lo, min(lo + size - 1, head_seq)) for lo in range(first_seq, head_seq + 1, size)]
    results: list[_Range | BaseException | None] = [None] * len(bounds)

    def run(index: int, lo: int, hi: int) -> None:
        try:
            with psycopg.connect(**params) as conn, conn.cursor() as cursor:
                results[index] = _copy_range(cursor, lo, hi, first_prev if lo == first_seq else None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, lo, hi)) for i, (lo, hi) in enumerate(bounds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


PARALLEL_MIN_EVENTS = 200_000


# --- retention hook (audit/archive.py, docs/audit.md "Retention") -----------------------------
def online_start() -> tuple[int, str]:
    """Where the online log starts: seq 1 from the genesis hash, or, once months are archived and
    detached, the seq after the last detached archive with that archive's last hash as the link
    (audit.archive.verify_all checks the archive files and that they link up to here)."""
    last = (AuditArchive.objects.filter(detached_at__isnull=False).order_by("-last_seq")
            .values_list("last_seq", "last_hash").first())
    return (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
# --- end of the retention hook ------------------------------------------------------------------


def verify_chain(*, workers: int | None = None, parallel_min: int = PARALLEL_MIN_EVENTS) -> Verification:
    """Recompute the whole chain. Records nothing itself (see audit.services.audit_verify).

    Large logs are checked by `workers` server processes at once (default: one per CPU, at most
    4), each over its own range of seq, unless the caller is inside a transaction (whose own
    uncommitted events other connections could not see).
    """
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with connection.cursor() as django_cursor:
        head_seq, head_hash = _read_head(django_cursor)
        first_seq, first_prev = online_start()
        online = head_seq - first_seq + 1
        if workers > 1 and online >= max(parallel_min, workers) and not connection.in_atomic_block:
            ranges = _parallel(first_seq, head_seq, workers, first_prev.encode())
        else:
            ranges = [_copy_range(django_cursor.cursor, first_seq, head_seq, first_prev.encode())]
    events = sum(r.events for r in ranges)
    broken: int | None = None
    problem = ""
    prev_hash = first_prev.encode()
    last_seq = first_seq - 1
    for found in ranges:
        if found.first_prev and found.first_prev != prev_hash:
            broken, problem = found.lo, f"seq {found.lo}: prev_hash does not match the hash of seq {found.lo - 1}"
            break
        if found.broken is not None:
            broken, problem = found.broken, found.problem
            break
        if found.events == 0:
            break  # nothing from here on: the head check below names the first missing seq
        prev_hash, last_seq = found.last_hash, found.last_seq
    if broken is None:
        if last_seq != head_seq:
            broken, problem = last_seq + 1, f"head says seq {head_seq} but the log ends at seq {last_seq}"
        elif prev_hash.decode() != head_hash:
            broken, problem = head_seq, f"head hash does not match the hash of seq {head_seq}"
    return Verification(ok=broken is None, events=events, head_seq=head_seq, head_hash=head_hash,
                        first_broken_seq=broken, problem=problem)


def canonical_in_database(seq: int) -> str | None:
    """The canonical text PostgreSQL renders for one event (for tests and investigations)."""
    with connection.cursor() as django_cursor:
        found = None
        with django_cursor.cursor.copy(_COPY, (seq, seq)) as copy:
            for line in _lines(copy):
                seq_text, _, _, text = line.split(b"\x02")
                if int(seq_text) == seq:
                    found = text.decode("utf-8")
    return found
