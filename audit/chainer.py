"""The chainer: gives committed pending events their final seq and keyed hash, in batches.

record() (audit/services.py) inserts an event inside the business transaction with a negative
placeholder seq (PENDING_BASE + a sequence number, so pending events sort after each other in
the order they were recorded) and no hash, and takes no lock: eight writers commit in parallel
and share fsyncs. The chainer then, in its own short transaction:

1. locks the head row (SELECT ... FOR UPDATE, or SKIP LOCKED when another chainer is at work:
   the call returns and that chainer, or the next, takes the events);
2. reads up to BATCH committed pending events, oldest placeholder first, from the pending bound on
   (no event is pending below it; it moves up as the transactions that could hold a lower
   placeholder end: _next_bound), so the scan skips the dead row versions chained events leave;
3. assigns head.seq + 1, + 2, ... (gap-free: a rolled-back chainer rolls back every assignment),
   ts = max(its recorded ts, the previous event's ts) (ts never decreases with seq), prev_hash,
   chain format 2 and hash = HMAC-SHA256 under the current key (audit/keys.py) of the event's COPY
   line (audit/chain.py) in one UPDATE; moves the head; commits.

The database lets exactly this UPDATE through (migration 0006): a pending row may receive its
seq, prev_hash, hash, key id, chain format and a ts no earlier than its own, once; anything else is
refused.

A seq-ordered reader (`seq > cursor`) only ever sees chained events: pending seqs are negative,
and one chainer transaction makes a whole batch visible at once, after every earlier batch.

Who runs it: record()'s on_commit callback in the writer's own process (non-blocking: skipped
when this process or another is already chaining, and at most one attempt per process every
AFTER_COMMIT_INTERVAL, so a busy writer's commits are chained as one batch instead of each paying
a chainer transaction and its fsync), the beat task `audit.chain` every second, and every read that
needs the chain (verification, exports, the log's list pages, checkpoints) with wait=True.

Keys: the chainer uses the first configured key. Before it first chains with a key other than the
head event's (an upgrade from the unkeyed chain, or a rotation), it writes a checkpoint of the
head naming the new key (audit/checkpoints.py): from there on verification refuses events
keyed with an older key or none. A process whose configuration does not know the head's key (an
old process after a rotation) chains nothing and logs why.
"""

from __future__ import annotations

import threading
import time
import weakref
from functools import lru_cache
from typing import Any

import structlog
from django.db import transaction
from psycopg import sql

from audit import checkpoints, keys
from audit import models as audit_models
from audit.chain import COPY_STORED_FIELDS, FORMAT_COPY, GENESIS_HASH, copy_fields, copy_ts
from audit.models import AuditEvent, AuditHead
from portal.prepared import prepared_cursor

log = structlog.get_logger(__name__)

PENDING_BASE = -(2**62)  # pending seq = PENDING_BASE + nextval('audit_pending_seq'): negative, ascending
PENDING_SEQUENCE = "audit_pending_seq"
BATCH = 5_000

_EVENTS = sql.Identifier(AuditEvent._meta.db_table)
_HEAD = sql.Identifier(AuditHead._meta.db_table)
# With the head: the pending bound and its mark (see _next_bound), the oldest transaction still running
# (this statement's snapshot: older than the pending scan's) and the last placeholder handed out (read
# now, before the assignment's snapshot gives the mark its transaction id).
_LOCK_HEAD = sql.SQL(
    "SELECT h.seq, h.hash, h.key_id, (SELECT e.ts FROM {events} e WHERE e.seq = h.seq),"
    " h.pending_from, h.mark_placeholder, h.mark_xid,"
    " pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
    " pg_sequence_last_value({sequence}::regclass) + {base}"
    " FROM {head} h WHERE h.id = 1 FOR UPDATE"
).format(events=_EVENTS, head=_HEAD, sequence=sql.Literal(PENDING_SEQUENCE), base=sql.Literal(PENDING_BASE))
_TRY_LOCK_HEAD = sql.Composed([_LOCK_HEAD, sql.SQL(" SKIP LOCKED")]).as_string(None)
# The statements as text once (they are prepared: psycopg knows a statement by its text, and a
# Composed would be rendered again on every execution).
_LOCK_HEAD = _LOCK_HEAD.as_string(None)
_CREATE_HEAD = sql.SQL(
    "INSERT INTO {head} (id, seq, hash, key_id) VALUES (1, 0, %s, '') ON CONFLICT (id) DO NOTHING"
).format(head=_HEAD)


# From the pending bound on (the head row's pending_from; the first placeholder while it is NULL).
_FROM_BOUND = sql.SQL(" AND seq >= (SELECT coalesce(pending_from, {base}) FROM {head} WHERE id = 1)").format(
    head=_HEAD, base=sql.Literal(PENDING_BASE))


@lru_cache(maxsize=8)
def _pending_sql(limit: int, *, bounded: bool = True) -> str:
    """The committed pending events, oldest placeholder first: placeholder, ts and the stored
    fields of the COPY line (audit.chain.COPY_STORED_FIELDS) as PostgreSQL's output functions write
    them (jsonb as text; inet by abbrev(), which is its output function's text where a cast to
    text would add the netmask); bounded: from the pending bound on, else from the first placeholder.

    Every chained event leaves its pending row version behind, dead, at the low end of the primary
    key until vacuum (hundreds of thousands of entries between two autovacuums at 1.5M events): a
    scan from the first placeholder reads all of them (0.5-2 ms a chainer run), and so does the
    planner when it looks up the index's lower end for `seq < 0`. So the scan starts at the pending
    bound (_next_bound), below which nothing is pending, read by the statement itself, and the
    statement is prepared without parameters (one generic plan, planned once per connection)."""
    lower = _FROM_BOUND if bounded else sql.SQL("")
    return sql.SQL("SELECT seq, ts, {stored} FROM {events} WHERE seq < 0{lower} ORDER BY seq LIMIT {limit}").format(
        stored=sql.SQL(", ").join(_STORED_OUTPUT[name] for name in COPY_STORED_FIELDS),
        events=_EVENTS, lower=lower, limit=sql.Literal(limit)).as_string(None)


# Each stored field as its type's output function writes it (what COPY writes before escaping).
_STORED_OUTPUT = {name: sql.Identifier(name) for name in COPY_STORED_FIELDS} | {
    "actor_ip": sql.SQL("abbrev({})").format(sql.Identifier("actor_ip")),
    "request_id": sql.SQL("{}::text").format(sql.Identifier("request_id")),
    "approvers": sql.SQL("{}::text").format(sql.Identifier("approvers")),
    "details": sql.SQL("{}::text").format(sql.Identifier("details")),
}





# The assignment and the head's move in one statement; it returns how many events it assigned, which
# must be all of them (anything else rolls the batch back). It moves the pending bound too and, when
# asked (a new mark), takes the mark's transaction id from its own snapshot: the first id not yet
# assigned when it starts, after the lock statement read the mark's placeholder (_next_bound).
_ASSIGN = sql.SQL(
    "WITH assigned AS (UPDATE {events} AS e SET seq = v.seq, ts = v.ts, prev_hash = v.prev, hash = v.hash,"
    " key_id = v.kid, chain_format = {chain_format}"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])"
    " AS v(old, seq, ts, prev, hash, kid) WHERE e.seq = v.old RETURNING 1)"
    " UPDATE {head} SET seq = %s, hash = %s, key_id = %s, pending_from = %s,"
    " mark_placeholder = CASE WHEN %s THEN %s ELSE mark_placeholder END,"
    " mark_xid = CASE WHEN %s THEN pg_snapshot_xmax(pg_current_snapshot())::text::bigint ELSE mark_xid END"
    " WHERE id = 1 RETURNING (SELECT count(*) FROM assigned)"
).format(events=_EVENTS, head=_HEAD, chain_format=sql.Literal(FORMAT_COPY)).as_string(None)
_HAS_PENDING = sql.SQL("SELECT EXISTS (SELECT 1 FROM {events} WHERE seq < 0{lower})").format(
    events=_EVENTS, lower=_FROM_BOUND).as_string(None)
_PENDING_COUNT = sql.SQL("SELECT count(*) FROM {events} WHERE seq < 0{lower}").format(
    events=_EVENTS, lower=_FROM_BOUND).as_string(None)

# At most one after-commit chainer attempt per process in this many seconds (chain_after_commit).
# 0.2, not 0.05: with 8 busy writer processes, 0.05 meant ~160 attempts a second, six in ten of
# them finding the head taken and the others chaining ~25 events each; the chainer run's fixed cost
# (a transaction, its commit, the pending scan, the Python around them) then was 15-25% of the CPU
# of an append (docs/audit.md "Figures"). A lone commit after a quiet moment is still chained at once.
AFTER_COMMIT_INTERVAL = 0.2
_last_attempt = 0.0  # time.monotonic() of this process's last after-commit attempt

# One chainer at a time in this process (the on_commit callbacks of many threads): the others
# return at once instead of queueing for the head row.
_process_lock = threading.Lock()


# Events this process recorded, by placeholder seq: the chainer gives the in-memory objects record()
# returned their final seq and hash when it chains them here ("seq assigned lazily"). Weak: an
# object nobody holds any more is not kept alive; dead entries are swept when the map grows.
_recorded: dict[int, list[weakref.ref]] = {}
_recorded_lock = threading.Lock()
# Events recorded through this thread's connection since its last chainer run (a connection sees
# its own uncommitted events; other threads' committed ones are chained by their own on_commit).
_here = threading.local()


def note_recorded(placed: list[tuple[int, AuditEvent]]) -> None:
    """record_many's events, by their placeholder seq (read before: a RecordedEvent's .seq chains)."""
    _here.unchained = getattr(_here, "unchained", 0) + len(placed)
    with _recorded_lock:
        for placeholder, item in placed:
            _recorded.setdefault(placeholder, []).append(weakref.ref(item))
        if len(_recorded) > 10_000:
            for seq in [seq for seq, refs in _recorded.items() if all(ref() is None for ref in refs)]:
                del _recorded[seq]


def _settle(assigned: list[tuple[int, int, Any, str, str, str]]) -> None:
    with _recorded_lock:
        for old, seq, ts, prev, digest, key_id in assigned:
            for ref in _recorded.pop(old, ()):
                item = ref()
                if item is not None:
                    item.seq, item.ts, item.prev_hash, item.hash, item.key_id = seq, ts, prev, digest, key_id
                    item.chain_format = FORMAT_COPY


def chain_recorded_here() -> None:
    """AuditEvent.objects' read hook: chain when this process recorded events not chained yet."""
    if getattr(_here, "unchained", 0):
        try:
            chain_pending(wait=True)
        except StaleKeyring as exc:  # a read must not fail for it; the events stay pending, logged
            log.warning("audit.chain_deferred", error="StaleKeyring", reason=str(exc)[:300])


audit_models.before_read = chain_recorded_here


class StaleKeyring(RuntimeError):
    """This process does not know the head's key: chaining would go back to an older key."""


def _lock_head(cursor: Any, wait: bool) -> tuple | None:
    cursor.execute(_LOCK_HEAD if wait else _TRY_LOCK_HEAD)
    row = cursor.fetchone()
    if row is None and wait:
        cursor.execute(_CREATE_HEAD, [GENESIS_HASH])  # a database created without migration 0003's row
        cursor.execute(_LOCK_HEAD)
        row = cursor.fetchone()
    return row


def _key_for(head_key_id: str) -> keys.AuditKey | None:
    key = keys.current()
    head_rank = keys.rank(head_key_id)
    if key is None and head_key_id != keys.UNKEYED:
        raise StaleKeyring(f"no audit key configured here but the chain is keyed with {head_key_id!r}")
    if head_rank is None:
        raise StaleKeyring(f"the chain's head is keyed with {head_key_id!r}, which this process does not know "
                           "(update PORTAL_AUDIT_KEYS here: new key first, old keys after it)")
    return key


def write_boundary(head_seq: int, head_hash: str, head_key_id: str, key: keys.AuditKey) -> checkpoints.Checkpoint:
    """The key boundary (call with the head locked): from here on verification wants `key` (or a
    newer one). Written before any event is chained with the key; if it cannot be, nothing is.
    Not written twice for the same head and key (rotate_audit_key may have written it already)."""
    last = checkpoints.latest()
    if last is not None and (last.seq, last.hash, last.next_key_id) == (head_seq, head_hash, key.id):
        return last
    written = checkpoints.write(head_seq, head_hash, head_key_id, key)
    log.info("audit.key_boundary_checkpoint", seq=head_seq, key_id=key.id, checkpoint=written.number)
    return written


def _next_bound(pending_from: int | None, mark_placeholder: int | None, mark_xid: int | None,
                oldest_running: int, last_placeholder: int | None, pending: list, limit: int,
                ) -> tuple[int, bool]:
    """The pending bound after this run, and whether to take a new mark (call under the head lock).

    The bound: no pending event, committed or still to commit, has a placeholder below it; the scan
    starts there. A mark is (the last placeholder handed out, read by the lock statement; the first
    transaction id not yet assigned when the assignment statement started, after that read). record()
    takes its transaction's id before its placeholder (pending_insert_sql), so every transaction
    holding a placeholder up to the mark has an id below the mark's. Once the oldest transaction
    still running (the lock statement's snapshot, older than the scan's) is at or past the mark's id,
    every one of them has ended: each committed event among them is visible to this run's scan, which
    reads from the old bound on and chains them all (unless the batch is full: then the bound stops
    after the last one chained). The bound moves past the mark, and a new mark is taken. A long
    transaction holds the bound back (the scan then reads what it used to), never past its event."""
    bound = PENDING_BASE if pending_from is None else pending_from
    passed = mark_xid is not None and mark_placeholder is not None and oldest_running >= mark_xid
    if passed:
        bound = max(bound, mark_placeholder + 1)
    if len(pending) >= limit:
        bound = min(bound, max(pending[-1][0] + 1, PENDING_BASE if pending_from is None else pending_from))
    return bound, (passed or mark_xid is None) and last_placeholder is not None


def chain_batch(*, wait: bool = True, limit: int = BATCH, bounded: bool = True) -> int | None:
    """Chain up to `limit` committed pending events in one transaction. Returns how many, or None
    when another chainer holds the head (wait=False). bounded: read pending events from the pending
    bound on (_next_bound), else from the first placeholder (the beat task's run: should an event
    ever be pending below the bound, it is chained within a second, and logged)."""
    with transaction.atomic():
        cursor = prepared_cursor()
        row = _lock_head(cursor, wait)
        if row is None:
            return None
        head_seq, prev_hash, head_key_id, prev_ts, pending_from, mark_placeholder, mark_xid, oldest_running, \
            last_placeholder = row
        key = _key_for(head_key_id)
        cursor.execute(_pending_sql(limit, bounded=bounded))
        pending = cursor.fetchall()
        if not pending:
            return 0
        if not bounded and pending_from is not None and pending[0][0] < pending_from:
            log.warning("audit.pending_below_bound", placeholder=pending[0][0], pending_from=pending_from)
        bound, new_mark = _next_bound(pending_from, mark_placeholder, mark_xid, oldest_running, last_placeholder,
                                      pending, limit)
        key_id = key.id if key else keys.UNKEYED
        if key is not None and key_id != head_key_id:
            write_boundary(head_seq, prev_hash, head_key_id, key)
        olds, seqs, stamps, prevs, hashes = [], [], [], [], []
        seq = head_seq
        format_text = str(FORMAT_COPY)
        for old, ts, *stored in pending:
            seq += 1
            if prev_ts is not None and ts < prev_ts:
                ts = prev_ts
            # The event's COPY line as verification will read it (audit/chain.py, format 2).
            message = copy_fields((str(seq), format_text, key_id, prev_hash, copy_ts(ts), *stored)).encode("utf-8")
            digest = keys.seal(key, message)
            olds.append(old)
            seqs.append(seq)
            stamps.append(ts)
            prevs.append(prev_hash)
            hashes.append(digest)
            prev_hash, prev_ts = digest, ts
        cursor.execute(_ASSIGN, [olds, seqs, stamps, prevs, hashes, [key_id] * len(olds), seq, prev_hash, key_id,
                                 bound, new_mark, last_placeholder, new_mark])
        assigned = cursor.fetchone()[0]
        if assigned != len(olds):  # cannot happen under the head lock; never move the head past a gap
            raise RuntimeError(f"audit chainer: assigned {assigned} of {len(olds)} events; batch rolled back")
    _settle(list(zip(olds, seqs, stamps, prevs, hashes, [key_id] * len(olds), strict=True)))
    return len(pending)


def chain_pending(*, wait: bool = True, bounded: bool = True) -> int:
    """Chain every committed pending event, batch after batch. wait=False returns at once when
    another chainer (in this process or another) is at work. bounded=False: read from the first
    placeholder, not the pending bound (the beat task). Returns how many it chained."""
    if not _process_lock.acquire(blocking=wait):
        return 0
    try:
        _here.unchained = 0  # before reading: what is recorded from now on counts again
        total = 0
        while True:
            done = chain_batch(wait=wait, bounded=bounded)
            if done is None:
                return total  # another chainer holds the head: it, or the next, takes the events
            if not done:
                return total
            total += done
            if done < BATCH:
                return total
    finally:
        _process_lock.release()


def chain_after_commit() -> None:
    """record()'s on_commit callback: chain now if nobody else is and this process has not tried in
    the last AFTER_COMMIT_INTERVAL; never fail the caller, whose transaction has committed (the
    beat task and the next read chain what is left).

    Why the interval: a chainer run is a transaction of its own with its own commit (an fsync), so
    running one after every business commit doubled the commits and capped appends at half the
    disk's commit rate. One attempt per process per interval chains the events of every commit in
    between as one batch. An event committed inside the interval stays pending until the next
    commit after it in this thread, another chainer that reaches it, the beat task (every second)
    or a read that needs the chain, whichever comes first; pending events are committed, never
    lost, and no reader by seq sees them before they are chained.

    Where it reads from: the pending bound (_next_bound), like every chainer but the beat task's: no
    event is pending below it, so an event of another process committed before this one's is read
    and chained before it. Reading from this thread's own oldest placeholder instead, tried once,
    skipped such events (a web request's request.queued, rate-limited out of its own chaining,
    behind the worker's request.running) and chained them after: seq order must follow commit order
    where one caused the other (CI caught it in the break-glass journey)."""
    global _last_attempt
    if not getattr(_here, "unchained", 0):
        return  # an earlier callback of the same transaction (several record() calls) or a read chained
    now = time.monotonic()
    if now - _last_attempt < AFTER_COMMIT_INTERVAL:
        return
    _last_attempt = now
    try:
        chain_pending(wait=False)
    except Exception as exc:  # noqa: BLE001 - logged; the events stay pending, never lost
        log.warning("audit.chain_deferred", error=type(exc).__name__, reason=str(exc)[:300])


def ensure_chained() -> int:
    """Before a read that needs the chain (pages by seq, exports, verification, checkpoints): chain
    every committed pending event, waiting for a running chainer. One indexed probe when nothing
    is pending."""
    if not has_pending():
        return 0
    try:
        return chain_pending(wait=True)
    except StaleKeyring as exc:  # this process's keys are old: it reads what is chained, chains nothing
        log.warning("audit.chain_deferred", error="StaleKeyring", reason=str(exc)[:300])
        return 0


def has_pending() -> bool:
    cursor = prepared_cursor()  # prepared: planning it read every dead pending index entry too
    cursor.execute(_HAS_PENDING)
    return bool(cursor.fetchone()[0])


def pending_count() -> int:
    """Recorded events not chained yet: from the pending bound on, prepared, like has_pending (counting
    from the first placeholder walked every dead pending index entry: 8 ms to execute and 16 ms to
    plan at 1.65M of them, after the 10M-event build of bench/scale.py)."""
    cursor = prepared_cursor()
    cursor.execute(_PENDING_COUNT)
    return int(cursor.fetchone()[0])


# Before its placeholder, record()'s INSERT makes sure its transaction has its id (a MATERIALIZED CTE
# is read, and so run, before the rows built from it): the pending bound (_next_bound) relies on every
# transaction holding a placeholder having an id no later than the placeholder.
_XACT_FIRST = sql.SQL("WITH xact AS MATERIALIZED (SELECT pg_current_xact_id()) ")


def pending_insert_sql(columns: tuple[str, ...]) -> str:
    """The INSERT record() runs: every event of a call in one statement, each with its placeholder
    seq and the database clock's ts; the other columns as parameter arrays."""
    return sql.SQL(
        "{xact_first}INSERT INTO {events} (seq, ts, {columns})"
        " SELECT nextval({sequence}) + {base}, clock_timestamp(), {values}"
        " FROM xact, unnest({arrays}) WITH ORDINALITY AS u({columns}, ord) ORDER BY ord"
        " RETURNING seq, ts"
    ).format(
        xact_first=_XACT_FIRST, events=_EVENTS, columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        values=sql.SQL(", ").join(sql.Identifier("u", c) for c in columns),
        sequence=sql.Literal(PENDING_SEQUENCE), base=sql.Literal(PENDING_BASE),
        arrays=sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(_ARRAY_TYPES[c])) for c in columns),
    ).as_string(None)


def pending_insert_one_sql(columns: tuple[str, ...]) -> str:
    """The same for one event (the common case): one row of parameters, cheaper for the server to
    parse and plan than the arrays."""
    return sql.SQL(
        "{xact_first}INSERT INTO {events} (seq, ts, {columns})"
        " SELECT nextval({sequence}) + {base}, clock_timestamp(), {values} FROM xact"
        " RETURNING seq, ts"
    ).format(
        xact_first=_XACT_FIRST, events=_EVENTS, columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sequence=sql.Literal(PENDING_SEQUENCE), base=sql.Literal(PENDING_BASE),
        values=sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(_ARRAY_TYPES[c])) for c in columns),
    ).as_string(None)


_ARRAY_TYPES = {
    "actor": "text", "actor_ip": "inet", "action": "text", "object_type": "text", "object_id": "text",
    "instance": "text", "database": "text", "statement": "text", "request_id": "bigint", "approvers": "jsonb",
    "outcome": "text", "details": "jsonb", "prev_hash": "text", "hash": "text",
}
