"""Reading the log for verification: the COPY statements that send the events of a seq range, and
the loop that checks their seq continuity, links, keys and MACs (audit/verify.py runs them over
the ranges and combines what they find; the module docstring there says what is checked and why
it is fast). Format-2 rows come straight from libpq (_rows); format-1 lines are rendered by the
server, CHUNK a COPY row (_lines)."""

from __future__ import annotations

import hashlib
import itertools
import select
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import connection
from psycopg import pq, sql

from audit import keys
from audit.chain import CANONICAL_REST_SQL, COPY_FIELDS, FORMAT_COPY, FORMAT_JSON, TS_SQL
from audit.models import AuditEvent

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
# The same text the general way, for the test that pins the two together.
CANONICAL_SQL = sql.SQL("""
SELECT jsonb_build_object(
    'seq', seq, 'ts', {ts}, 'actor', actor, 'actor_ip', host(actor_ip), 'action', action,
    'object_type', object_type, 'object_id', object_id, 'instance', instance, 'database', database,
    'statement', statement, 'request_id', request_id, 'approvers', approvers, 'outcome', outcome,
    'details', details)::text
FROM {events} WHERE seq = %s
""").format(ts=sql.SQL(TS_SQL), events=_EVENTS)

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
