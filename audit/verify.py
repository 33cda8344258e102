"""Verification of the chain: recompute every link under its key, check it against the signed
checkpoints outside the database, and name the first broken (rewritten) seq.

Rows are read with COPY ... TO STDOUT and checked line by line, so memory stays flat at any
size. The head row is read first and the COPY stops at its seq: every row up to the head's seq
was chained and committed when the head was read, so appends running meanwhile neither break
nor slow the check (pending events, seq < 0, are not part of the chain yet).

What is checked (docs/audit.md, "Keyed chain" and "Checkpoints"):
- seq gap-free from where the online log starts (online_start(), the retention hook) to the head;
- each prev_hash is the previous event's hash, each hash the HMAC-SHA256 of the event's message in
  its chain format (audit/chain.py) under the event's key (plain SHA-256 for events from before
  keys, key_id ""); a format other than 1 or 2 is a change;
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

Speed: events of chain format 2 (audit/chain.py: the MAC covers the event's own COPY line) are
read with a plain COPY of the table's columns, so the server does no more than a bare COPY, and
Python's work per event is one split of the line's first fields, one comparison and the MAC. Older
events (format 1, before migration audit/0009) are read as before: PostgreSQL renders their
canonical form and sends CHUNK events per COPY row, each line ending with the exact message its MAC
covers. Where format 2 starts is the first event from the start seq on whose format is not 1; a
format-1 event after that (chained by an older process during an upgrade) is linked in the format-2
pass and its MAC checked by the format-1 reader afterwards. Large logs are split into seq ranges read
by several server processes at once, the server's work running beside Python's.
"""

from __future__ import annotations

import hashlib
import itertools
import select
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from django.db import connection
from psycopg import pq, sql

from audit import chainer, checkpoints, keys
from audit.chain import CANONICAL_REST_SQL, COPY_FIELDS, FORMAT_COPY, FORMAT_JSON, GENESIS_HASH, TS_SQL
from audit.models import AuditArchive, AuditEvent, AuditHead

_EVENTS = sql.Identifier(AuditEvent._meta.db_table)
CHUNK = 1000  # events per COPY row
# Format 1: one line per event, hash \t seq \t chain format \t key_id \t prev_hash \n canonical form
# (audit.chain's CANONICAL_REST_SQL), so the line's tail from prev_hash on is the MACed message itself;
# CHUNK lines (seq BETWEEN g AND g + CHUNK - 1, in seq order) joined by \x03 make one COPY row. No
# rendered canonical form holds a raw control character (strings and jsonb escape them), and the
# hashes and key ids are hex: a separator inside a line comes from a hand-edited column, and makes
# that event fail its checks. CSV mode quotes each row with \x01 (it holds newlines) and doubles a
# \x01 in it; a range without events gives an empty row. The parameters are (hi, lo, hi). The lines
# are aggregated from a subquery read in seq order (the primary key's index; string_agg(... ORDER BY)
# would sort every chunk again: about a third more server time) and the chunks come in
# generate_series's order (ORDER BY g would sort the rendered rows, spilling to disk). Were lines
# ever out of order, their links would break: verification would fail, never pass.
_COPY = sql.Composed([
    sql.SQL("COPY (SELECT (SELECT string_agg(line, E'\\x03') FROM (SELECT hash || E'\\t' || seq::text"
            " || E'\\t' || chain_format::text || E'\\t' || key_id || E'\\t' || prev_hash || E'\\n'"
            " || '{\"ts\": \"' || "), sql.SQL(TS_SQL),
    sql.SQL(" || '\", \"seq\": ' || seq::text || "), sql.SQL(CANONICAL_REST_SQL),
    sql.SQL(" AS line FROM {events} WHERE seq BETWEEN g AND least(g + {last}, %s) ORDER BY seq) AS chunk)"
            " FROM generate_series(%s::bigint, %s::bigint, {chunk}) AS g)"
            " TO STDOUT (FORMAT csv, DELIMITER E'\\x05', QUOTE E'\\x01')").format(
        events=_EVENTS, last=sql.Literal(CHUNK - 1), chunk=sql.Literal(CHUNK)),
])

# Format 2 (audit/chain.py): one plain COPY text row per event, its hash, a tab, then the MACed line
# (COPY_FIELDS: seq, chain format, key_id, prev_hash, ...: the same first fields as format 1's lines,
# so one loop reads both). The server only runs each column's output function, as a bare COPY of the table
# does; the session's DateStyle and TimeZone are set first (_SESSION), as the chainer's ts text has them.
_COPY_LINES = sql.SQL("COPY (SELECT hash, {fields} FROM {events} WHERE seq BETWEEN %s AND %s ORDER BY seq)"
                      " TO STDOUT").format(fields=sql.SQL(", ").join(map(sql.Identifier, COPY_FIELDS)),
                                           events=_EVENTS)
_SESSION = ("SELECT set_config('DateStyle', 'ISO, MDY', false), set_config('TimeZone', 'UTC', false),"
            " set_config('client_encoding', 'UTF8', false)")
# Where format 2 starts (events before it are format 1): the primary key walked from `lo` up.
_FIRST_COPY_FORMAT = sql.SQL(
    "SELECT min(seq) FROM {events} WHERE seq BETWEEN %s AND %s AND chain_format <> {json}").format(
    events=_EVENTS, json=sql.Literal(FORMAT_JSON))

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
    deferred: list[int] = field(default_factory=list)  # format-1 events among format-2 rows (_check)


_NO_FLOOR = 1 << 62


class _KeyRules:
    """The key rules for consecutive events from seq `lo` on (module docstring): a known key, never an
    older one (or none) after a newer one, and after a checkpoint's seq its next key or a newer one.
    The readers' loops call it only when an event's key id differs from the one before, or when they
    pass a checkpoint's seq; `floors`: (seq, rank, label) from the checkpoints, ascending."""

    def __init__(self, floors: list[tuple[int, int, str]], lo: int, prev_rank: int | None) -> None:
        self.floors = floors
        index = 0
        while index < len(floors) and floors[index][0] < lo:
            index += 1
        self.index = index
        self.max_rank = min((rank for _, rank, _ in floors[:index]), default=_NO_FLOOR)
        self.label = floors[index - 1][2] if index else ""
        self.next_floor = floors[index][0] if index < len(floors) else _NO_FLOOR
        self.rank = prev_rank  # the current key's rank (the event before `lo`'s when given)
        self.first_rank: int | None = None
        self.pads: tuple[Any, Any] = (None, None)  # the current key's HMAC states; None: unkeyed

    def pass_floors(self, seq: int) -> None:
        floors = self.floors
        while self.index < len(floors) and floors[self.index][0] < seq:
            if floors[self.index][1] < self.max_rank:
                self.max_rank, self.label = floors[self.index][1], floors[self.index][2]
            self.index += 1
        self.next_floor = floors[self.index][0] if self.index < len(floors) else _NO_FLOOR

    def take(self, seq: int, kid: bytes) -> str:
        """Make `kid` the current key: "" when the rules allow it, else the problem."""
        key_id = kid.decode(errors="replace")
        rank = keys.rank(key_id)
        if rank is None:
            return f"seq {seq}: keyed with {key_id!r}, a key not configured here"
        if self.rank is not None and rank > self.rank:
            return f"seq {seq}: keyed with {key_id or 'no key'!r} after a newer key (downgraded: rewritten)"
        if rank > self.max_rank:
            return f"seq {seq}: keyed with {key_id or 'no key'!r} but {self.label} (rewritten)"
        if self.first_rank is None:
            self.first_rank = rank
        key = keys.by_id(key_id)
        self.pads = key.pads if key else (None, None)
        self.rank = rank
        return ""


def _check(lines: Any, lo: int, prev_hash: bytes | None, floors: list[tuple[int, int, str]],
           prev_rank: int | None = None, *, rendered: bool = False) -> _Range:
    """Check seq continuity, links, keys and MACs of consecutive events from seq `lo`: format-2 rows of
    _COPY_LINES (the hash, a tab, the MACed line, a newline) or, rendered=True, format-1 lines of _COPY
    (the hash, a tab, seq, format and key id, then prev_hash, a newline and the canonical form: the
    MACed message). Both begin hash, seq, format, key id, prev_hash, so one loop reads them.

    With prev_hash None the first line's own prev_hash is trusted here and checked by the caller
    (likewise its key against the event before it). A format-1 event among format-2 rows (chained by
    an older process during an upgrade) is linked like the others and its MAC checked afterwards by
    the format-1 reader (`deferred`: verify_chain, _check_deferred).

    The loop is the verification's hot path (a million lines): locals only, the key's HMAC written
    out (two hash-state copies), the key checks only when the key id changes or a floor is passed.
    When an event's prev_hash field is the previous event's hash and its MAC the stored hash, the
    stored prev_hash is exactly that hash (the MACed message holds it, ended by a separator no
    hash holds).
    """
    found = _Range(lo=lo)
    rules = _KeyRules(floors, lo, prev_rank)
    next_floor = rules.next_floor
    current_kid: bytes | None = None
    inner = outer = None
    sha256 = hashlib.sha256
    end = None if rendered else -1  # a COPY row ends with its newline; a rendered line does not
    own_format = b"1" if rendered else b"2"
    expected_seq = lo
    events = 0
    broken: int | None = None
    problem = ""
    last_hash = b""
    deferred = found.deferred
    for line in lines:
        events += 1
        if broken is not None:
            continue  # drain the COPY; the count still tells how many events there are
        message = line[65:end]
        try:
            seq_text, chain_format, kid, tail = message.split(b"\t", 3)
            seq = int(seq_text)
        except ValueError:
            broken, problem = expected_seq, f"seq {expected_seq}: the row cannot be read (a column was edited by hand)"
            continue
        if seq != expected_seq:
            broken, problem = expected_seq, f"gap: seq {expected_seq} is missing (next is {seq})"
            continue
        if seq > next_floor:
            rules.pass_floors(seq)
            next_floor, current_kid = rules.next_floor, None  # re-check the key against the new floor
        if kid != current_kid:
            problem = rules.take(seq, kid)
            if problem:
                broken = seq
                continue
            current_kid, (inner, outer) = kid, rules.pads
        if prev_hash is None:
            found.first_prev = prev_hash = tail[:64]
        elif tail[:64] != prev_hash:
            broken, problem = seq, f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}"
            continue
        stored_hash = line[:64]
        if chain_format == own_format:
            signed = tail if rendered else message
            if inner is None:
                digest = sha256(signed).hexdigest()
            else:
                h = inner.copy()
                h.update(signed)
                o = outer.copy()
                o.update(h.digest())
                digest = o.hexdigest()
            if digest.encode() != stored_hash:
                broken, problem = seq, f"seq {seq}: the event's content does not match its hash (altered)"
                continue
        elif chain_format == b"1":
            deferred.append(seq)
        else:
            broken = seq
            problem = f"seq {seq}: chain format {chain_format.decode(errors='replace')!r} is not one it can be (altered)"
            continue
        prev_hash = last_hash = stored_hash
        expected_seq = seq + 1
    found.events, found.broken, found.problem = events, broken, problem
    found.last_hash, found.last_seq = last_hash, expected_seq - 1 if last_hash else 0
    found.first_rank, found.last_rank = rules.first_rank, rules.rank
    return found


def _rows(copy: Any) -> Any:
    """The rows of a COPY ... TO STDOUT read straight from libpq (psycopg's public `pgconn`), as
    bytes: psycopg's own iteration goes through a generator and its wait loop for every row, about
    half of a format-2 row's Python time besides the checks (0.29 against 0.14 s of CPU for 300,000
    rows). Waiting for the socket releases the GIL, so the other ranges' threads run meanwhile; the
    COPY's end (its result, or the server's error) is left to psycopg's read."""
    pgconn = copy.connection.pgconn
    get = pgconn.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            yield bytes(data)
        elif nbytes == 0:  # no whole row buffered: wait for the server
            _wait_readable(pgconn)
        else:
            break
    # The COPY is over (-1) or failed (-2): its final result says which.
    failed = None
    while True:
        while pgconn.is_busy():
            _wait_readable(pgconn)
        result = pgconn.get_result()
        if result is None:
            break
        if result.status != pq.ExecStatus.COMMAND_OK:
            failed = result.error_message or b"COPY failed"
    if failed is not None or nbytes < -1:
        raise psycopg.DatabaseError(f"verification's COPY failed: {(failed or pgconn.error_message).decode(errors='replace')}")


def _wait_readable(pgconn: Any) -> None:
    select.select([pgconn.socket], [], [])
    pgconn.consume_input()


def _copy_range(cursor, lo: int, hi: int, prev_hash: bytes | None, floors: list, prev_rank: int | None,
                chain_format: int = FORMAT_JSON) -> _Range:
    if chain_format == FORMAT_JSON:
        with cursor.copy(_COPY, (hi, lo, hi)) as copy:
            return _check(_lines(copy), lo, prev_hash, floors, prev_rank, rendered=True)
    with cursor.copy(_COPY_LINES, (lo, hi)) as copy:
        return _check(_rows(copy), lo, prev_hash, floors, prev_rank)


def _segments(lo: int, hi: int, pieces: int, copy_from: int) -> list[tuple[int, int, int]]:
    """lo..hi as (lo, hi, format) ranges: the format-1 part (before copy_from) in about `pieces`
    ranges, the format-2 part as one. Format 2's server side is a plain COPY, lighter than Python's
    checks, so one connection keeps the server and Python working side by side as the bare pass
    does; splitting it into ranges read by threads only added contention for the GIL (idle machine,
    1.1M events: 0.90-1.09 x the bare pass with one range, 1.16-1.46 with two, 1.31-1.62 with four)."""
    found = []
    last_rendered = min(hi, copy_from - 1)
    if lo <= last_rendered:
        size = max(1, -(-(last_rendered - lo + 1) // pieces))
        found += [(start, min(start + size - 1, last_rendered), FORMAT_JSON)
                  for start in range(lo, last_rendered + 1, size)]
    if max(lo, copy_from) <= hi:
        found.append((max(lo, copy_from), hi, FORMAT_COPY))
    return found


def _parallel(segments: list[tuple[int, int, int]], first_prev: bytes, floors: list,
              prev_rank: int | None) -> list[_Range]:
    """Each segment read by its own connection and server process, at once."""
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    results: list[_Range | BaseException | None] = [None] * len(segments)

    def run(index: int, lo: int, hi: int, chain_format: int) -> None:
        try:
            with psycopg.connect(**params) as conn, conn.cursor() as cursor:
                cursor.execute(_SESSION)
                first = index == 0
                results[index] = _copy_range(cursor, lo, hi, first_prev if first else None, floors,
                                             prev_rank if first else None, chain_format)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, *segment)) for i, segment in enumerate(segments)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def _check_deferred(cursor, seqs: list[int], floors: list) -> _Range | None:
    """The MACs of format-1 events found among format-2 ones (_check linked them already), by the
    format-1 reader over each run of consecutive seqs; the first that fails, if any."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    for lo, hi in runs:
        found = _copy_range(cursor, lo, hi, None, floors, None, FORMAT_JSON)
        if found.broken is not None or found.events != hi - lo + 1:
            return found
    return None


PARALLEL_MIN_EVENTS = 200_000
# Ranges of format-1 events verified at once by default, even on fewer CPUs: about two thirds of
# their work is the servers' rendering, which runs in parallel, while the Python side (one process,
# one GIL) MACs one range's lines at a time; more ranges than cores keep the cores busier (paired
# runs on the 1.2M-event bench log at load 5-7, 2 cores: four ranges were faster than two in five
# of six, e.g. 1.24 against 1.81 times the bare pass). Format-2 events are one range (_segments),
# read beside them.
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
        cursor.execute(_SESSION)  # COPY writes ts as the chainer rendered it (audit.chain.copy_ts)
        cursor.execute(_FIRST_COPY_FORMAT, [start_seq, head_seq])
        copy_from = cursor.fetchone()[0] or head_seq + 1
        parallel = workers > 1 and online >= max(parallel_min, workers) and not connection.in_atomic_block
        segments = _segments(start_seq, head_seq, workers if parallel else 1, copy_from)
        if parallel and len(segments) > 1:
            ranges = _parallel(segments, start_prev.encode(), floors, start_rank)
        else:
            ranges = [_copy_range(cursor, lo, hi, start_prev.encode() if lo == start_seq else None, floors,
                                  start_rank if lo == start_seq else None, chain_format)
                      for lo, hi, chain_format in segments]
        deferred = _check_deferred(cursor, [seq for found in ranges for seq in found.deferred], floors)
        cursor.execute(_CHECKPOINTED, [first_seq, head_seq])
        checkpointed = cursor.fetchall()
    pending = chainer.pending_count()
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
    if deferred is not None and (broken is None or deferred.lo < broken):
        broken = deferred.broken if deferred.broken is not None else deferred.lo
        problem = deferred.problem or f"seq {deferred.lo}: the row cannot be read as chain format 1"
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


def copy_line_in_database(seq: int) -> bytes | None:
    """The format-2 line (the MACed message) PostgreSQL writes for one event (tests, investigations)."""
    with connection.cursor() as django_cursor:
        django_cursor.cursor.execute(_SESSION)
        with django_cursor.cursor.copy(_COPY_LINES, (seq, seq)) as copy:
            rows = [bytes(data) for data in copy]
    return rows[0][65:-1] if rows else None


def canonical_in_database(seq: int) -> str | None:
    """The canonical text PostgreSQL renders for one event (for tests and investigations)."""
    with connection.cursor() as django_cursor:
        found = None
        with django_cursor.cursor.copy(_COPY, (seq, seq, seq)) as copy:
            for line in _lines(copy):
                seq_text, _, _, message = line[65:].split(b"\t", 3)
                if int(seq_text) == seq:
                    found = message.split(b"\n", 1)[1].decode("utf-8")
    return found
