"""Verification of the chain: recompute every link under its key, check it against the signed
checkpoints outside the database, and name the first broken (rewritten) seq.

Rows are read with COPY ... TO STDOUT and checked line by line, so memory stays flat at any
size. The head row is read first and the COPY stops at its seq: every row up to the head's seq
was chained and committed when the head was read, so appends running meanwhile neither break
nor slow the check (pending events, seq < 0, are not part of the chain yet).

What is checked (docs/audit.md, "Keyed chain" and "Checkpoints"):
- seq gap-free from where the online log starts (online_start(), the retention hook) to the head;
- each prev_hash is the previous event's hash, each hash the HMAC-SHA256 of prev_hash and the
  canonical form under the event's key (plain SHA-256 for events from before keys, key_id "");
- keys only move forward: an event keyed with an older key than the event before it, or unkeyed
  after a keyed one, is a downgrade; after a checkpoint, every event is keyed with the
  checkpoint's next_key_id or a newer key (so a log rewritten with recomputed plain SHA-256
  hashes is found at its first rewritten event, whatever the database says);
- every checkpoint file: signature, numbering, link to the previous file (audit/checkpoints.py);
  the event at each checkpoint's seq still has the checkpointed hash and key; the head is not
  behind any checkpoint; every file an `audit.checkpointed` event names is still there, unchanged.

incremental=True starts after the newest valid checkpoint whose event still matches: cost
proportional to the events since (the checkpoint files and the checkpointed events are still
all checked: a few small reads).

Speed: PostgreSQL renders each event's canonical form while Python MACs the previous lines, so
the server and Python work in parallel, and large logs are split into seq ranges read by
several server processes at once. The COPY sends CHUNK events per row and each event's line ends
with the exact message its MAC covers, so Python's work per event is one split, one slice
comparison and the MAC (per-row overhead of the COPY protocol and of psycopg is paid once a chunk).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from django.db import connection
from psycopg import sql

from audit import checkpoints, keys
from audit.chain import CANONICAL_REST_SQL, GENESIS_HASH, TS_SQL
from audit.models import AuditArchive, AuditEvent, AuditHead

_EVENTS = sql.Identifier(AuditEvent._meta.db_table)
CHUNK = 1000  # events per COPY row
# One line per event: seq \x02 hash \x02 key_id \x02 prev_hash \n canonical form (audit.chain's
# CANONICAL_REST_SQL), so the line's last field is the MACed message itself; CHUNK lines (seq
# BETWEEN g AND g + CHUNK - 1, in seq order) joined by \x03 make one COPY row. No rendered
# canonical form holds a raw control character (strings and jsonb escape them), and the hashes and
# key ids are hex: a separator inside a line comes from a hand-edited column, and makes that event
# fail its checks. CSV mode quotes each row with \x01 (it holds newlines) and doubles a \x01 in it;
# a range without events gives an empty row. The parameters are (hi, lo, hi). The lines are
# aggregated from a subquery read in seq order (the primary key's index; string_agg(... ORDER BY)
# would sort every chunk again: about a third more server time) and the chunks come in
# generate_series's order (ORDER BY g would sort the rendered rows, spilling to disk). Were lines
# ever out of order, their links would break: verification would fail, never pass.
_COPY = sql.Composed([
    sql.SQL("COPY (SELECT (SELECT string_agg(line, E'\\x03') FROM (SELECT seq::text || E'\\x02' || hash"
            " || E'\\x02' || key_id || E'\\x02' || prev_hash || E'\\n' || '{\"ts\": \"' || "), sql.SQL(TS_SQL),
    sql.SQL(" || '\", \"seq\": ' || seq::text || "), sql.SQL(CANONICAL_REST_SQL),
    sql.SQL(" AS line FROM {events} WHERE seq BETWEEN g AND least(g + {last}, %s) ORDER BY seq) AS chunk)"
            " FROM generate_series(%s::bigint, %s::bigint, {chunk}) AS g)"
            " TO STDOUT (FORMAT csv, DELIMITER E'\\x05', QUOTE E'\\x01')").format(
        events=_EVENTS, last=sql.Literal(CHUNK - 1), chunk=sql.Literal(CHUNK)),
])

# The same text the general way, for the test that pins the two together.
CANONICAL_SQL = sql.SQL("""
SELECT jsonb_build_object(
    'seq', seq, 'ts', {ts}, 'actor', actor, 'actor_ip', host(actor_ip), 'action', action,
    'object_type', object_type, 'object_id', object_id, 'instance', instance, 'database', database,
    'statement', statement, 'request_id', request_id, 'approvers', approvers, 'outcome', outcome,
    'details', details)::text
FROM {events} WHERE seq = %s
""").format(ts=sql.SQL(TS_SQL), events=_EVENTS)

_AT_SEQS = sql.SQL("SELECT seq, hash, key_id FROM {events} WHERE seq = ANY(%s)").format(events=_EVENTS)
_CHECKPOINTED = sql.SQL(
    "SELECT seq, details->>'file', details->>'digest' FROM {events} WHERE action = 'audit.checkpointed' AND seq BETWEEN %s AND %s ORDER BY seq"
).format(events=_EVENTS)
_PENDING_COUNT = sql.SQL("SELECT count(*) FROM {events} WHERE seq < 0").format(events=_EVENTS)


@dataclass
class Verification:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None
    problem: str
    start_seq: int = 1  # the first seq checked (after the newest good checkpoint when incremental)
    checkpoints: int = 0  # valid checkpoint files
    checkpoint_problems: list[str] = field(default_factory=list)  # files edited, deleted, unsigned
    pending: int = 0  # recorded events not chained yet (the chainer is behind or stopped)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_READ_HEAD = sql.SQL("SELECT seq, hash, key_id FROM {head} WHERE id = 1").format(
    head=sql.Identifier(AuditHead._meta.db_table)).as_string(None)


def _read_head(cursor) -> tuple[int, str, str]:
    cursor.execute(_READ_HEAD)
    row = cursor.fetchone()
    return (row[0], row[1], row[2]) if row else (0, GENESIS_HASH, keys.UNKEYED)


def _chunk_lines(data: Any) -> list[bytes]:
    """One COPY row (psycopg reads exactly one row at a time) as its events' lines."""
    row = bytes(data)
    if row.startswith(b"\x01"):
        row = row[1:-2]  # the CSV quotes and the row's newline
        if b"\x01" in row:  # only a hand-edited column holds one; CSV doubled it
            row = row.replace(b"\x01\x01", b"\x01")
    else:
        row = row[:-1]
        if not row:
            return []  # no event in this chunk's seq range
    return row.split(b"\x03")


def _lines(copy: Any) -> Any:
    """The events' lines of a _COPY, in seq order, without Python code per line."""
    return itertools.chain.from_iterable(map(_chunk_lines, copy))


@dataclass
class _Range:
    """What one COPY over seq lo..hi found; links across ranges are checked when combining."""

    lo: int
    events: int = 0
    first_prev: bytes = b""
    first_rank: int | None = None
    last_hash: bytes = b""
    last_seq: int = 0
    last_rank: int | None = None
    broken: int | None = None
    problem: str = ""


_NO_FLOOR = 1 << 62


def _check(lines: Any, lo: int, prev_hash: bytes | None, floors: list[tuple[int, int, str]],
           prev_rank: int | None = None) -> _Range:
    """Check seq continuity, links, keys and MACs of consecutive lines starting at seq `lo`.

    With prev_hash None the first line's own prev_hash is trusted here and checked by the caller
    (likewise its key against the event before it). `floors`: (seq, rank, label) from the
    checkpoints, ascending: every event after seq must be keyed at that rank or newer.

    The loop is the verification's hot path (a million lines): locals only, the key's HMAC written
    out (two hash-state copies), the key checks only when the key id changes or a floor is passed.
    A line's message is prev_hash + "\n" + canonical form as stored and rendered: when its first 64
    bytes are the previous event's hash and its MAC is the stored hash, the stored prev_hash is exactly
    that hash too (neither it nor any canonical form holds a raw newline, the message exactly one).
    """
    found = _Range(lo=lo)
    floor_index = 0
    while floor_index < len(floors) and floors[floor_index][0] < lo:
        floor_index += 1
    max_rank = min((rank for _, rank, _ in floors[:floor_index]), default=_NO_FLOOR)
    floor_label = floors[floor_index - 1][2] if floor_index else ""
    next_floor = floors[floor_index][0] if floor_index < len(floors) else _NO_FLOOR
    current_kid: bytes | None = None
    current_rank = prev_rank
    inner = outer = None
    sha256 = hashlib.sha256
    expected_seq = lo
    events = 0
    broken: int | None = None
    problem = ""
    last_hash = b""
    for line in lines:
        events += 1
        if broken is not None:
            continue  # drain the COPY; the count still tells how many events there are
        try:
            seq_text, stored_hash, kid, message = line.split(b"\x02", 3)
            seq = int(seq_text)
        except ValueError:
            broken, problem = expected_seq, f"seq {expected_seq}: the row cannot be read (a column was edited by hand)"
            continue
        if seq != expected_seq:
            broken, problem = expected_seq, f"gap: seq {expected_seq} is missing (next is {seq})"
            continue
        if seq > next_floor:
            while floor_index < len(floors) and floors[floor_index][0] < seq:
                if floors[floor_index][1] < max_rank:
                    max_rank, floor_label = floors[floor_index][1], floors[floor_index][2]
                floor_index += 1
            next_floor = floors[floor_index][0] if floor_index < len(floors) else _NO_FLOOR
            current_kid = None  # re-check the key against the new floor
        if kid != current_kid:
            key_id = kid.decode(errors="replace")
            rank = keys.rank(key_id)
            if rank is None:
                broken, problem = seq, f"seq {seq}: keyed with {key_id!r}, a key not configured here"
                continue
            if current_rank is not None and rank > current_rank:
                broken, problem = seq, f"seq {seq}: keyed with {key_id or 'no key'!r} after a newer key (downgraded: rewritten)"
                continue
            if rank > max_rank:
                broken, problem = seq, f"seq {seq}: keyed with {key_id or 'no key'!r} but {floor_label} (rewritten)"
                continue
            if found.first_rank is None:
                found.first_rank = rank
            key = keys.by_id(key_id)
            inner, outer = key.pads if key else (None, None)
            current_kid, current_rank = kid, rank
        if prev_hash is None:
            found.first_prev = prev_hash = message[:message.find(b"\n")]
        elif message[:64] != prev_hash:
            broken, problem = seq, f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}"
            continue
        if inner is None:
            digest = sha256(message).hexdigest()
        else:
            h = inner.copy()
            h.update(message)
            o = outer.copy()
            o.update(h.digest())
            digest = o.hexdigest()
        if digest.encode() != stored_hash:
            broken, problem = seq, f"seq {seq}: the event's content does not match its hash (altered)"
            continue
        prev_hash = last_hash = stored_hash
        expected_seq = seq + 1
    found.events, found.broken, found.problem = events, broken, problem
    found.last_hash, found.last_seq = last_hash, expected_seq - 1 if last_hash else 0
    found.last_rank = current_rank
    return found


def _copy_range(cursor, lo: int, hi: int, prev_hash: bytes | None, floors: list, prev_rank: int | None) -> _Range:
    with cursor.copy(_COPY, (hi, lo, hi)) as copy:
        return _check(_lines(copy), lo, prev_hash, floors, prev_rank)


def _parallel(first_seq: int, head_seq: int, workers: int, first_prev: bytes, floors: list,
              prev_rank: int | None) -> list[_Range]:
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
                first = lo == first_seq
                results[index] = _copy_range(cursor, lo, hi, first_prev if first else None, floors,
                                             prev_rank if first else None)
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
# Ranges verified at once by default, even on fewer CPUs: about two thirds of the work is the
# servers' rendering, which runs in parallel, while the Python side (one process, one GIL) MACs
# one range's lines at a time; more ranges than cores keep the cores busier (paired runs on the
# 1.2M-event bench log at load 5-7, 2 cores: four ranges were faster than two in five of six, e.g.
# 1.24 against 1.81 times the bare pass).
PARALLEL_WORKERS = 4


# --- retention hook (audit/archive.py, docs/audit.md "Retention") -----------------------------
def online_start() -> tuple[int, str]:
    """Where the online log starts: seq 1 from the genesis hash, or, once months are archived and
    detached, the seq after the last detached archive with that archive's last hash as the link
    (audit.archive_verify.verify_all checks the archive files and that they link up to here)."""
    last = (AuditArchive.objects.filter(detached_at__isnull=False).order_by("-last_seq")
            .values_list("last_seq", "last_hash").first())
    return (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
# --- end of the retention hook ------------------------------------------------------------------


def _floors(valid: list[checkpoints.Checkpoint]) -> list[tuple[int, int, str]]:
    floors = []
    for checkpoint in valid:
        rank = keys.rank(checkpoint.next_key_id)
        if rank is not None:
            floors.append((checkpoint.seq, rank, f"checkpoint {checkpoint.number} says every event after seq "
                                                  f"{checkpoint.seq} is keyed with {checkpoint.next_key_id!r} or newer"))
    return floors


def _rows_at(cursor, seqs: list[int]) -> dict[int, tuple[str, str]]:
    if not seqs:
        return {}
    cursor.execute(_AT_SEQS, [seqs])
    return {seq: (hash_, key_id) for seq, hash_, key_id in cursor.fetchall()}


def verify_chain(*, workers: int | None = None, parallel_min: int = PARALLEL_MIN_EVENTS,
                 incremental: bool = False) -> Verification:
    """Check the chain (see the module's docstring). Records nothing itself (see
    audit.services.audit_verify, which also chains pending events first).

    Large ranges are checked by `workers` server processes at once (default PARALLEL_WORKERS), each
    over its own range of seq, unless the caller is inside a transaction (whose own uncommitted
    events other connections could not see).
    """
    workers = workers or PARALLEL_WORKERS
    loaded = checkpoints.load()
    floors = _floors(loaded.valid)
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        head_seq, head_hash, _ = _read_head(cursor)
        first_seq, first_prev = online_start()
        # What the database holds at each checkpoint's seq (one indexed read).
        at = _rows_at(cursor, [c.seq for c in loaded.valid if first_seq <= c.seq <= head_seq])
        start_seq, start_prev, start_rank = first_seq, first_prev, None
        if incremental:
            for checkpoint in reversed(loaded.valid):
                if first_seq - 1 <= checkpoint.seq <= head_seq and _matches(checkpoint, at, first_seq, first_prev):
                    start_seq, start_prev = checkpoint.seq + 1, checkpoint.hash
                    start_rank = keys.rank(checkpoint.key_id)
                    break
        online = head_seq - start_seq + 1
        if workers > 1 and online >= max(parallel_min, workers) and not connection.in_atomic_block:
            ranges = _parallel(start_seq, head_seq, workers, start_prev.encode(), floors, start_rank)
        else:
            ranges = [_copy_range(cursor, start_seq, head_seq, start_prev.encode(), floors, start_rank)]
        cursor.execute(_CHECKPOINTED, [first_seq, head_seq])
        checkpointed = cursor.fetchall()
        cursor.execute(_PENDING_COUNT)
        pending = cursor.fetchone()[0]
    events = sum(r.events for r in ranges)
    broken: int | None = None
    problem = ""
    prev_hash = start_prev.encode()
    prev_rank = start_rank
    last_seq = start_seq - 1
    for found in ranges:
        if found.first_prev and found.first_prev != prev_hash:
            broken, problem = found.lo, f"seq {found.lo}: prev_hash does not match the hash of seq {found.lo - 1}"
            break
        if found.first_rank is not None and prev_rank is not None and found.first_rank > prev_rank:
            broken, problem = found.lo, f"seq {found.lo}: keyed with an older key than seq {found.lo - 1} (downgraded)"
            break
        if found.broken is not None:
            broken, problem = found.broken, found.problem
            break
        if found.events == 0:
            break  # nothing from here on: the head check below names the first missing seq
        prev_hash, last_seq = found.last_hash, found.last_seq
        prev_rank = found.last_rank if found.last_rank is not None else prev_rank
    if broken is None:
        if last_seq != head_seq:
            broken, problem = last_seq + 1, f"head says seq {head_seq} but the log ends at seq {last_seq}"
        elif prev_hash.decode() != head_hash:
            broken, problem = head_seq, f"head hash does not match the hash of seq {head_seq}"
    # The checkpoints: a rewrite with the key itself (no MAC or key rule can see it) or a removed
    # tail still shows here; the earliest finding wins.
    previous_good = first_seq - 1
    for checkpoint in loaded.valid:
        if checkpoint.seq < first_seq - 1:
            continue
        if checkpoint.seq > head_seq:
            candidate = head_seq + 1
            text = (f"checkpoint {checkpoint.number} holds seq {checkpoint.seq} but the log ends at seq {head_seq} "
                    "(events removed)")
        elif not _matches(checkpoint, at, first_seq, first_prev):
            candidate = checkpoint.seq
            text = (f"seq {checkpoint.seq} does not match checkpoint {checkpoint.number}: the log was rewritten "
                    f"after seq {previous_good} and at or before seq {checkpoint.seq}")
        else:
            previous_good = checkpoint.seq
            continue
        if broken is None or candidate < broken:
            broken, problem = candidate, text
        break
    file_problems = list(loaded.problems)
    for seq, name, digest in checkpointed:
        if name not in loaded.digests:
            file_problems.append(f"checkpoint file {name} (recorded at seq {seq}) is missing (deleted)")
        elif loaded.digests[name] != digest:
            file_problems.append(f"checkpoint file {name} (recorded at seq {seq}) was changed")
    ok = broken is None and not file_problems
    if broken is None and file_problems:
        problem = file_problems[0]
    return Verification(ok=ok, events=events, head_seq=head_seq, head_hash=head_hash, first_broken_seq=broken,
                        problem=problem, start_seq=start_seq, checkpoints=len(loaded.valid),
                        checkpoint_problems=file_problems, pending=pending)


def _matches(checkpoint: checkpoints.Checkpoint, at: dict[int, tuple[str, str]], first_seq: int,
             first_prev: str) -> bool:
    if checkpoint.seq == first_seq - 1:
        return checkpoint.hash == first_prev  # the start: genesis, or the last archived hash
    return at.get(checkpoint.seq) == (checkpoint.hash, checkpoint.key_id)


def canonical_in_database(seq: int) -> str | None:
    """The canonical text PostgreSQL renders for one event (for tests and investigations)."""
    with connection.cursor() as django_cursor:
        found = None
        with django_cursor.cursor.copy(_COPY, (seq, seq, seq)) as copy:
            for line in _lines(copy):
                seq_text, _, _, message = line.split(b"\x02", 3)
                if int(seq_text) == seq:
                    found = message.split(b"\n", 1)[1].decode("utf-8")
    return found
