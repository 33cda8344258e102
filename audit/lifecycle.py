"""Start and stop of the audit machinery are themselves events (PCI DSS v4 10.2.1.6).

The machinery that appends, chains, checkpoints and forwards the log runs in the Celery worker
and beat processes (the web only appends inside its own transactions). Each start and each
orderly stop of one of them is recorded as `audit.machinery_started` / `audit.machinery_stopped`
with the component, host and process id, so a gap in the log can be told from a stopped
machine. A process killed outright cannot record its own stop: the next start's event names the
previous one's start so an auditor sees the unrecorded stop.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import structlog
from django.db import close_old_connections, transaction

from audit.models import AuditEvent
from audit.services import ensure_chained, record

COMPONENTS = ("worker", "beat")


def _identity(component: str, hostname: str | None) -> dict[str, Any]:
    return {"component": component, "hostname": hostname or socket.gethostname(), "pid": os.getpid()}


def machinery_started(component: str, *, hostname: str | None = None) -> AuditEvent:
    """Record that `component` started; names the same component's last recorded start without a
    recorded stop after it (a process that died without stopping in order)."""
    if component not in COMPONENTS:
        raise ValueError(f"component: unknown audit machinery component {component!r}")
    close_old_connections()
    details = _identity(component, hostname)
    last = (AuditEvent.objects.filter(action__in=("audit.machinery_started", "audit.machinery_stopped"),
                                      details__component=component, details__hostname=details["hostname"])
            .exclude(seq__isnull=True).order_by("-seq").values("seq", "action").first())
    if last is not None and last["action"] == "audit.machinery_started":
        details["previous_start_without_stop"] = last["seq"]
    with transaction.atomic():
        return record("audit.machinery_started", object_type="audit_machinery", object_id=component,
                      outcome="ok", details=details)


def machinery_stopped(component: str, *, hostname: str | None = None) -> AuditEvent:
    """Record an orderly stop of `component`, and chain it before the process goes: its after-commit
    chainer may be inside its interval (audit/chainer.py), and an orderly stop leaves nothing it
    recorded to another process's chainer."""
    if component not in COMPONENTS:
        raise ValueError(f"component: unknown audit machinery component {component!r}")
    close_old_connections()
    with transaction.atomic():
        stopped = record("audit.machinery_stopped", object_type="audit_machinery", object_id=component,
                         outcome="ok", details=_identity(component, hostname))
    try:
        ensure_chained()
    except Exception as exc:  # noqa: BLE001 - the stop is recorded (committed, pending): beat or a read chains it
        structlog.get_logger(__name__).warning("audit.chain_deferred", error=type(exc).__name__, reason=str(exc)[:300])
    return stopped
