"""Publishing the notifications of request transitions (the sending is portal/services/notifications.py).

`notify_enqueue` is called from `transaction.on_commit` after a transition (by the services and
the engine); it publishes the task `portal.notify_request` and never raises nor waits long (a
broker outage costs the notification, never the transition). It publishes by task name, so this
module imports neither the tasks nor what they read: the engine can call it from below the
services layer.
"""

from __future__ import annotations

import structlog

from portal.celery import app

log = structlog.get_logger(__name__)

EVENTS = {"submitted", "approved", "rejected", "cancelled", "retried", "queued", "applied", "failed", "break_glass",
          "break_glass_overdue"}


def notify_enqueue(request_id: int | list[int], event: str) -> None:
    """Publish the notification task of one transition, or one task for the same transition of
    several requests (a batch the engine applied together)."""
    try:
        if isinstance(request_id, list):
            app.send_task("portal.notify_requests", args=[request_id, event], retry=False)
        else:
            app.send_task("portal.notify_request", args=[request_id, event], retry=False)
    except Exception as exc:  # noqa: BLE001 - a lost notification must never fail a transition
        log.warning("notify.enqueue_failed", request=request_id, notification=event, error=type(exc).__name__)


ALERT_EVENTS = {"opened", "resolved"}


def alert_notify_enqueue(alert_id: int, event: str) -> None:
    """Publish the notification of a monitoring alert opened or resolved (portal.notify_alert)."""
    try:
        app.send_task("portal.notify_alert", args=[alert_id, event], retry=False)
    except Exception as exc:  # noqa: BLE001 - a lost notification must never fail a sample
        log.warning("notify.enqueue_failed", alert=alert_id, notification=event, error=type(exc).__name__)
