"""audit.services.record(): the only way into the audit log.

Call it inside the transaction of the change it describes: the event commits if and only if
the change does. Appends serialise on the single AuditHead row: the UPDATE that takes the next
`seq` locks it until the caller's transaction ends, so `seq` is gap-free (a rolled-back
append rolls back its head update too) and `ts`, read from the database clock while the lock
is held, ascends with `seq`.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from psycopg import sql

from audit.chain import GENESIS_HASH, json_safe, link
from audit.models import AuditEvent, AuditHead
from audit.verify import verify_chain
from portal.logging import redact_text

SYSTEM = "system"

# Keys whose values never enter the log, whatever a caller passes in `details`.
_SECRET_KEYS = {"password", "admin_password", "secret", "token", "dsn", "pwd", "passwd", "new_password"}

# Table names from the models' _meta, composed once (psycopg.sql; the texts never change).
_HEAD = sql.Identifier(AuditHead._meta.db_table)
_TAKE_SEQS = sql.SQL(
    "UPDATE {head} SET seq = seq + %s WHERE id = 1 RETURNING seq, hash, clock_timestamp()"
).format(head=_HEAD).as_string(None)
_CREATE_HEAD = sql.SQL(
    "INSERT INTO {head} (id, seq, hash) VALUES (1, 0, %s) ON CONFLICT (id) DO NOTHING"
).format(head=_HEAD).as_string(None)
_COLUMNS = ("seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance", "database",
            "statement", "request_id", "approvers", "outcome", "details", "prev_hash", "hash")
_JSON_COLUMNS = (_COLUMNS.index("approvers"), _COLUMNS.index("details"))
# The events and the head's new hash in one round trip; every value is a parameter (arrays, one
# element per event), so the statement's text never changes.
_INSERT_EVENTS = sql.SQL(
    "WITH inserted AS (INSERT INTO {events} ({columns})"
    " SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::inet[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::jsonb[], %s::text[], %s::jsonb[],"
    " %s::text[], %s::text[]))"
    " UPDATE {head} SET hash = %s WHERE id = 1"
).format(events=sql.Identifier(AuditEvent._meta.db_table), head=_HEAD,
         columns=sql.SQL(", ").join(sql.Identifier(name) for name in _COLUMNS)).as_string(None)

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
    """
    item = event(action, **fields)
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending.append(item)
        return item
    return record_many([item])[0]


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


def event(
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
) -> AuditEvent:
    """An event not yet in the chain (no seq, ts or hash), redacted, for `record_many`."""
    return AuditEvent(
        actor=_actor_name(actor),
        actor_ip=_normalise_ip(actor_ip),
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id not in (None, "") else "",
        instance=getattr(instance, "name", instance) or "",
        database=database or "",
        statement=redact_text(statement) if statement else "",
        request_id=request_id,
        approvers=[str(a) for a in (approvers or [])],
        outcome=outcome,
        details=json_safe(_redacted(details or {})),
    )


def record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Append events built by `event()` to the chain, in order, and return them.

    One head update takes all their seqs, one INSERT writes them, one update moves the head's
    hash: a worker recording an apply's ten events holds the head lock for three round trips
    instead of thirty. They share the `ts` read under the lock (ts still never decreases with seq).
    """
    if not events:
        return []
    # savepoint=False: an append that fails dooms the caller's transaction, as it should (the
    # change must not commit without its event), and saves two round trips.
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute(_TAKE_SEQS, [len(events)])
            row = cursor.fetchone()
            if row is None:
                # First event ever on a database created without migration 0003's head row.
                cursor.execute(_CREATE_HEAD, [GENESIS_HASH])
                cursor.execute(_TAKE_SEQS, [len(events)])
                row = cursor.fetchone()
            last_seq, prev_hash, now = row
            seq = last_seq - len(events)
            for item in events:
                seq += 1
                item.seq, item.ts, item.prev_hash = seq, now, prev_hash
                item.hash = prev_hash = link(prev_hash, event_dict(item))
            columns = [[getattr(item, name) for item in events] for name in _COLUMNS]
            for index in _JSON_COLUMNS:
                columns[index] = [json.dumps(value) for value in columns[index]]
            cursor.execute(_INSERT_EVENTS, [*columns, prev_hash])
    # The given events now hold their seq, ts and hashes; the returned ones are the same rows as
    # loaded models (from_db), as a read of the log would give them.
    return [AuditEvent.from_db(connection.alias, _COLUMNS, [getattr(item, name) for name in _COLUMNS])
            for item in events]



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
    }


def audit_verify(*, actor: Any, actor_ip: str | None = None) -> Any:
    """Recompute the chain and record the verification itself (audit.verified)."""
    result = verify_chain()
    with transaction.atomic():
        record("audit.verified", actor=actor, actor_ip=actor_ip, object_type="audit_log",
               outcome="ok" if result.ok else "broken", details=result.as_dict())
    return result


def audit_export_record(*, actor: Any, actor_ip: str | None, export_format: str, filters: dict[str, Any]) -> None:
    """Every export is itself an event (audit.exported), committed before the first byte leaves."""
    with transaction.atomic():
        record("audit.exported", actor=actor, actor_ip=actor_ip, object_type="audit_log", outcome="ok",
               details={"format": export_format, "filters": filters})


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
