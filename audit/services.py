"""audit.services.record(): the only way into the audit log.

Call it inside the transaction of the change it describes: the event commits if and only if
the change does. Appends serialise on the AuditHead row (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import GENESIS_HASH, link
from audit.models import AuditEvent, AuditHead
from portal.logging import redact_text

SYSTEM = "system"


def _actor_name(actor: Any) -> str:
    if actor is None:
        return SYSTEM
    if isinstance(actor, str):
        return actor
    return getattr(actor, "username", None) or SYSTEM


def record(
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
    """Append one event to the chain and return it."""
    with transaction.atomic():
        head = _locked_head()
        event = AuditEvent(
            seq=head.seq + 1,
            ts=timezone.now(),
            actor=_actor_name(actor),
            actor_ip=actor_ip or None,
            action=action,
            object_type=object_type,
            object_id=str(object_id) if object_id not in (None, "") else "",
            instance=getattr(instance, "name", instance) or "",
            database=database or "",
            statement=redact_text(statement) if statement else "",
            request_id=request_id,
            approvers=list(approvers or []),
            outcome=outcome,
            details=details or {},
            prev_hash=head.hash,
        )
        event.hash = link(head.hash, event_dict(event))
        event.save(force_insert=True)
        AuditHead.objects.filter(pk=1).update(seq=event.seq, hash=event.hash)
    return event


def _locked_head() -> AuditHead:
    head = AuditHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        # First event ever: create the head row; a concurrent creator waits on the PK.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO audit_audithead (id, seq, hash) VALUES (1, 0, %s) ON CONFLICT (id) DO NOTHING",
                [GENESIS_HASH],
            )
        head = AuditHead.objects.select_for_update().get(pk=1)
    return head


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
