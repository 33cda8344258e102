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

Reading and checking the events is audit/verify_lines.py's.

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

from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connection
from psycopg import sql

from audit import chainer, checkpoints, keys
from audit.chain import FORMAT_JSON, GENESIS_HASH
from audit.models import AuditArchive, AuditEvent, AuditHead
from audit.verify_lines import _SESSION, _check_deferred, _copy_range, _parallel, _segments

_EVENTS = sql.Identifier(AuditEvent._meta.db_table)
# Where format 2 starts (events before it are format 1): the primary key walked from `lo` up.
_FIRST_COPY_FORMAT = sql.SQL(
    "SELECT min(seq) FROM {events} WHERE seq BETWEEN %s AND %s AND chain_format <> {json}").format(
    events=_EVENTS, json=sql.Literal(FORMAT_JSON))

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
