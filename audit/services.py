"""audit.services.record(): the only way into the audit log.

Call it inside the transaction of the change it describes: the event commits if and only if
the change does. record() inserts the event pending (a negative placeholder seq, no hash) and
takes no lock, so concurrent writers commit in parallel; the chainer (audit/chainer.py) gives
committed events their gap-free seq and keyed hash in batches, right after the commit in the
writer's process, from beat every second, and before every read that needs the chain.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from audit import chainer, checkpoints, keys
from audit.chain import json_safe
from audit.chainer import chain_after_commit, pending_insert_one_sql, pending_insert_sql
from audit.models import AuditEvent, AuditHead, RecordedEvent
from audit.verify import verify_chain
from portal.logging import redact_text
from portal.prepared import prepared_cursor

SYSTEM = "system"

# Keys whose values never enter the log, whatever a caller passes in `details`.
_SECRET_KEYS = {"password", "admin_password", "secret", "token", "dsn", "pwd", "passwd", "new_password"}

_COLUMNS = ("actor", "actor_ip", "action", "object_type", "object_id", "instance", "database",
            "statement", "request_id", "approvers", "outcome", "details", "prev_hash", "hash")
_APPROVERS, _DETAILS = _COLUMNS.index("approvers"), _COLUMNS.index("details")
_JSON_COLUMNS = (_APPROVERS, _DETAILS)
# Every event of one call in one statement; every value a parameter (arrays, one element per event).
_INSERT_PENDING = pending_insert_sql(_COLUMNS)
_INSERT_ONE_PENDING = pending_insert_one_sql(_COLUMNS)
_LOADED = ("seq", "ts", *_COLUMNS)

def _actor_name(actor: Any) -> str:
    if actor is None:
        return SYSTEM
    if isinstance(actor, str):
        return actor[:150] or SYSTEM
    return getattr(actor, "username", None) or SYSTEM


def _normalise_ip(actor_ip: str | None) -> str | None:
    """The address as PostgreSQL's inet prints it back (the hash must survive the round trip)."""
    if not actor_ip:
        return None
    try:
        address = ipaddress.ip_address(str(actor_ip).strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return address.compressed


def _redacted(value: Any, key: str = "") -> Any:
    if key.lower() in _SECRET_KEYS and value not in (None, "", [], {}):
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


_local = threading.local()


def record(action: str, **fields: Any) -> AuditEvent:
    """Append one event to the chain and return it; `fields` are those of `event()`.

    Secrets are redacted from `statement` and `details` (PASSWORD '...', DSN passwords, and
    values under keys such as `password`), so no event ever holds one. Inside `batched()` the
    event is appended when the block ends (it has no seq or hash until then).

    The hot path of every business transaction: the row's values go straight into one prepared
    INSERT (no model built before it; the returned object is the only one), see `_append_one`.
    """
    pending = getattr(_local, "pending", None)
    if pending is not None:
        item = event(action, **fields)
        pending.append(item)
        return item
    return _append_one(_row(action, **fields))


@contextmanager
def batched() -> Iterator[None]:
    """Collect the events recorded inside and append them with one `record_many` as the block
    ends, still inside the caller's transaction (use it within `transaction.atomic()`).

    An approval records three events (approval, approved, queued): three head updates and three
    inserts become one of each, and the head row stays locked for two round trips, not six.
    Only around code without an inner savepoint that may roll back while the block goes on: its
    events would still be appended. When the block raises, its events are dropped with the
    transaction they belonged to. Nested blocks join the outermost one.
    """
    if getattr(_local, "pending", None) is not None:
        yield
        return
    pending: list[AuditEvent] = []
    _local.pending = pending
    try:
        yield
    finally:
        _local.pending = None
    record_many(pending)


def _row(
    action: str,
    *,
    actor: Any = None,
    actor_ip: str | None = None,
    object_type: str = "",
    object_id: Any = "",
    instance: Any = "",
    database: str = "",
    statement: str = "",
    request_id: int | None = None,
    approvers: list[str] | None = None,
    outcome: str = "",
    details: dict[str, Any] | None = None,
) -> list[Any]:
    """An event's values in _COLUMNS order, redacted, approvers and details as Python values."""
    return [
        _actor_name(actor),
        _normalise_ip(actor_ip),
        action,
        object_type,
        str(object_id) if object_id not in (None, "") else "",
        getattr(instance, "name", instance) or "",
        database or "",
        redact_text(statement) if statement else "",
        request_id,
        [str(a) for a in approvers] if approvers else [],
        outcome,
        json_safe(_redacted(details)) if details else {},
        "",  # prev_hash and hash: empty while pending (the chainer sets them)
        "",
    ]


def event(action: str, **fields: Any) -> AuditEvent:
    """An event not yet in the chain (no seq, ts or hash), redacted, for `record_many`; `fields`
    as `record()` takes them (actor, actor_ip, object_type, object_id, instance, database,
    statement, request_id, approvers, outcome, details)."""
    return AuditEvent(**dict(zip(_COLUMNS, _row(action, **fields), strict=True)))


def _append_one(row: list[Any]) -> AuditEvent:
    """Insert one pending event (values from `_row`) in the caller's transaction and return it as
    stored (a RecordedEvent: its seq is final once read).

    Prepared: parsing and planning the fourteen-column INSERT was about half the server's cost of
    an append (measured; docs/audit.md "Figures"); the cursor is Django's (one query in its log).
    No model is built before the INSERT: the returned object is the only one."""
    values = row.copy()
    values[_APPROVERS] = json.dumps(values[_APPROVERS])
    values[_DETAILS] = json.dumps(values[_DETAILS])
    # savepoint=False: an append that fails dooms the caller's transaction, as it should (the
    # change must not commit without its event).
    with transaction.atomic(savepoint=False):
        cursor = prepared_cursor()
        cursor.execute(_INSERT_ONE_PENDING, values)
        seq, ts = cursor.fetchone()
        transaction.on_commit(chain_after_commit)
    stored = RecordedEvent.from_db(connection.alias, _LOADED, [seq, ts, *row])
    chainer.note_recorded([(seq, stored)])
    return stored


def record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Append events built by `event()` to the log, in order, and return them as stored.

    One INSERT writes them all, pending: their seq is a negative placeholder and their hash empty
    until the chainer runs after the commit (audit/chainer.py); reads of the log that need the
    chain (verification, exports, the list pages) chain first. Nothing is locked, so writers in
    separate transactions never wait for each other here.
    """
    if not events:
        return []
    for item in events:
        item.prev_hash = item.hash = ""
    columns = [[getattr(item, name) for item in events] for name in _COLUMNS]
    for index in _JSON_COLUMNS:
        columns[index] = [json.dumps(value) for value in columns[index]]
    # savepoint=False: an append that fails dooms the caller's transaction, as it should (the
    # change must not commit without its event).
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            if len(events) == 1:
                cursor.execute(_INSERT_ONE_PENDING, [values[0] for values in columns])
            else:
                cursor.execute(_INSERT_PENDING, columns)
            placed = cursor.fetchall()
        transaction.on_commit(chain_after_commit)
    for item, (seq, ts) in zip(events, placed, strict=True):
        item.seq, item.ts = seq, ts
    stored = [RecordedEvent.from_db(connection.alias, _LOADED, [getattr(item, name) for name in _LOADED])
              for item in events]
    chainer.note_recorded([(seq, item) for (seq, _), item in zip(placed * 2, [*events, *stored], strict=True)])
    return stored


def event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "ts": event.ts,
        "actor": event.actor,
        "actor_ip": event.actor_ip,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "instance": event.instance,
        "database": event.database,
        "statement": event.statement,
        "request_id": event.request_id,
        "approvers": event.approvers,
        "outcome": event.outcome,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "key_id": event.key_id,
        "chain_format": event.chain_format,
    }


def ensure_chained() -> int:
    """Chain every committed pending event now (waiting for a running chainer): before a read that
    needs final seqs and hashes."""
    return chainer.ensure_chained()


def audit_verify(*, actor: Any, actor_ip: str | None = None, incremental: bool = False) -> Any:
    """Chain what is pending, check the chain against the keys and the checkpoints, and record the
    verification itself (audit.verified). incremental: from the newest good checkpoint on."""
    ensure_chained()
    result = verify_chain(incremental=incremental)
    with transaction.atomic():
        record("audit.verified", actor=actor, actor_ip=actor_ip, object_type="audit_log",
               outcome="ok" if result.ok else "broken", details=result.as_dict())
    return result


CHECKPOINTED = "audit.checkpointed"


def checkpoint_due(now: Any = None) -> bool:
    """A checkpoint is due when events other than checkpoint records arrived since the last one and
    either AUDIT_CHECKPOINT_EVENTS of them did or AUDIT_CHECKPOINT_MINUTES passed. Checkpoint
    records themselves never make one due: an idle log gets no endless series."""
    last = checkpoints.latest()
    last_seq = last.seq if last else 0
    newer = AuditEvent.objects.filter(seq__gt=last_seq).exclude(action=CHECKPOINTED)
    if not newer.exists():
        return False
    wanted = settings.AUDIT_CHECKPOINT_EVENTS
    if last is None or newer[:wanted].count() >= wanted:  # bounded: at most `wanted` index entries
        return True
    written = datetime.fromisoformat(last.time.replace("Z", "+00:00"))
    return (now or timezone.now()) - written >= timedelta(minutes=settings.AUDIT_CHECKPOINT_MINUTES)


def audit_checkpoint(*, actor: Any = SYSTEM, force: bool = False) -> checkpoints.Checkpoint | None:
    """Write a signed checkpoint of the head when one is due (or `force`), and record it
    (audit.checkpointed, with the file's name and digest, so a deleted newest file is found).
    A store that fails is recorded too (audit.checkpoint_failed, outcome failed) and re-raised."""
    ensure_chained()
    if not force and not checkpoint_due():
        return None
    key = keys.current()
    if key is None:
        raise RuntimeError("no audit key configured (PORTAL_AUDIT_KEYS): checkpoints cannot be signed")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_LOCK_HEAD_FOR_CHECKPOINT)
            seq, head_hash, head_key_id = cursor.fetchone()
            written = checkpoints.write(seq, head_hash, head_key_id, key)
    except Exception as exc:
        with transaction.atomic():
            record("audit.checkpoint_failed", actor=actor, object_type="audit_checkpoint", outcome="failed",
                   details={"reason": f"{type(exc).__name__}: {str(exc)[:300]}"})
        raise
    with transaction.atomic():
        record(CHECKPOINTED, actor=actor, object_type="audit_checkpoint", object_id=written.number, outcome="ok",
               details={"number": written.number, "seq": written.seq, "hash": written.hash,
                        "key_id": written.next_key_id, "file": written.name, "digest": written.digest})
    return written


def audit_export_record(*, actor: Any, actor_ip: str | None, export_format: str, filters: dict[str, Any]) -> None:
    """Every export is itself an event (audit.exported), committed before the first byte leaves;
    then everything committed is chained, so the export holds final seqs and hashes."""
    with transaction.atomic():
        record("audit.exported", actor=actor, actor_ip=actor_ip, object_type="audit_log", outcome="ok",
               details={"format": export_format, "filters": filters})
    ensure_chained()


def audit_key_rotate(*, actor: Any = SYSTEM) -> dict[str, Any]:
    """Put the first key of PORTAL_AUDIT_KEYS in force now (manage.py rotate_audit_key): chain what
    is pending, then write the key boundary checkpoint at the head, so every later event must be
    keyed with the new key (or a newer one). Recorded as audit.key_rotated (outcome ok, or
    unchanged when the head is already under this key). Run it where the new key list is set,
    after every process has it (a process without the new key refuses to chain, never downgrades)."""
    key = keys.current()
    if key is None:
        raise RuntimeError("no audit key configured (PORTAL_AUDIT_KEYS)")
    ensure_chained()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_LOCK_HEAD_FOR_CHECKPOINT)
            seq, head_hash, head_key_id = cursor.fetchone()
        if head_key_id == key.id:
            details: dict[str, Any] = {"key_id": key.id, "seq": seq}
            outcome = "unchanged"
        else:
            written = chainer.write_boundary(seq, head_hash, head_key_id, key)
            details = {"from_key_id": head_key_id, "key_id": key.id, "seq": seq, "checkpoint": written.number,
                       "file": written.name}
            outcome = "ok"
        record("audit.key_rotated", actor=actor, object_type="audit_key", object_id=key.id, outcome=outcome,
               details=details)
    return {"outcome": outcome, **details}


_LOCK_HEAD_FOR_CHECKPOINT = sql.SQL("SELECT seq, hash, key_id FROM {head} WHERE id = 1 FOR UPDATE").format(
    head=sql.Identifier(AuditHead._meta.db_table)).as_string(None)


# What an audit data read records of its query: the filters and paging, never anything else.
ACCESS_PARAMETERS = ("since", "until", "action", "actor", "instance", "request", "after", "before", "page",
                     "page_size", "format", "role", "schema", "at")


def audit_access_record(*, actor: Any, actor_ip: str | None, view: str, parameters: Any = None,
                        object_id: Any = "") -> None:
    """Every read of audit data is itself an event (`audit.viewed`, PCI DSS 10.2.1.3): the log, one
    event, who can access what; with the filters used. Exports and verification have their own."""
    filters = {key: str(parameters.get(key))[:200] for key in ACCESS_PARAMETERS
               if parameters is not None and parameters.get(key)}
    with transaction.atomic():
        record("audit.viewed", actor=actor, actor_ip=actor_ip, object_type="audit_log" if view != "entitlements"
               else "entitlements", object_id=object_id, outcome="ok", details={"view": view, "filters": filters})
