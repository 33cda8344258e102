"""Notifications of request transitions: e-mail and the team's webhook (JSON), sent by Celery.

`notify_enqueue` is called from `transaction.on_commit` after a transition; it publishes the
task `portal.notify_request` and never raises nor waits long (a broker outage costs the
notification, never the transition). The task sends the e-mail (console backend in the demo)
and POSTs a JSON body to the team's webhook_url when one is set and allowed.
"""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import structlog
from django.conf import settings
from django.core.mail import send_mail

log = structlog.get_logger(__name__)

WEBHOOK_TIMEOUT = 5
EVENTS = {"submitted", "approved", "rejected", "cancelled", "retried", "queued", "applied", "failed"}


def notify_enqueue(request_id: int | list[int], event: str) -> None:
    """Publish the notification task of one transition, or one task for the same transition of
    several requests (a batch the engine applied together)."""
    from portal.tasks import notify_request, notify_requests

    try:
        if isinstance(request_id, list):
            notify_requests.apply_async(args=[request_id, event], retry=False)
        else:
            notify_request.apply_async(args=[request_id, event], retry=False)
    except Exception as exc:  # noqa: BLE001 - a lost notification must never fail a transition
        log.warning("notify.enqueue_failed", request=request_id, notification=event, error=type(exc).__name__)


def notification_body(request, event: str) -> dict:
    return {
        "event": f"request.{event}",
        "request": {
            "id": request.pk, "type": request.type, "status": request.status, "risk": request.risk,
            "team": request.team.name, "instance": request.instance.name,
            "requester": request.requester.username if request.requester else "system",
            "plan_hash": request.plan_hash, "status_detail": request.status_detail,
            "url": f"{settings.PORTAL_BASE_URL}/requests/{request.pk}/",
        },
    }


def _recipients(request, event: str) -> list[str]:
    from django.contrib.auth.models import User

    from portal.services.policy import requirement_of

    emails = set()
    if request.requester and request.requester.email:
        emails.add(request.requester.email)
    if event == "submitted":
        requirement = requirement_of(request)
        reviewers = User.objects.filter(groups__name__in=requirement.approver_groups, is_active=True)
        emails.update(e for e in reviewers.values_list("email", flat=True) if e)
        if requirement.owner_lead_team is not None:
            from portal.services.policy import team_leads

            leads = User.objects.filter(pk__in=team_leads(requirement.owner_lead_team))
            emails.update(e for e in leads.values_list("email", flat=True) if e)
    return sorted(emails)


def notify_send(request_id: int, event: str) -> dict:
    """Send the e-mail and the webhook for one transition; returns what was sent (for tests)."""
    return notify_send_many([request_id], event).get(request_id, {"email": [], "webhook": None})


def notify_send_many(request_ids: list[int], event: str) -> dict[int, dict]:
    """The same transition of several requests, read in one query; what was sent, by id."""
    from portal.models import ChangeRequest
    from portal.services.instances import target_allowed

    if event not in EVENTS:
        return {}
    sent: dict[int, dict] = {}
    requests = ChangeRequest.objects.select_related("team", "instance", "requester").filter(pk__in=request_ids)
    for request in requests:
        body = notification_body(request, event)
        recipients = _recipients(request, event)
        mailed: list[str] = []
        if recipients:
            try:
                send_mail(subject=f"[dbportal] request #{request.pk} ({request.type}) {event}",
                          message=json.dumps(body, indent=2), from_email=None, recipient_list=recipients)
                mailed = recipients
            except (smtplib.SMTPException, OSError) as exc:
                # A mail server that is down or refuses costs this mail, never the transition;
                # the operator learns of it here rather than not at all.
                log.warning("notify.email_failed", request=request.pk, notification=event, error=type(exc).__name__)
        webhook = None
        url = request.team.webhook_url
        if url:
            host = urlsplit(url).hostname or ""
            if not target_allowed(host):
                log.warning("notify.webhook_not_allowed", request=request.pk, team=request.team.name)
                webhook = "not allowed"
            else:
                webhook = _post_json(url, body)
        sent[request.pk] = {"email": mailed, "webhook": webhook}
    return sent


def _post_json(url: str, body: dict) -> str:
    data = json.dumps(body).encode()
    post = urllib.request.Request(url, data=data, method="POST",
                                  headers={"Content-Type": "application/json", "User-Agent": "dbportal"})
    try:
        with urllib.request.urlopen(post, timeout=WEBHOOK_TIMEOUT) as response:  # the host was checked against PORTAL_ALLOWED_TARGETS
            return str(response.status)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        log.warning("notify.webhook_failed", error=type(exc).__name__)
        return f"failed: {type(exc).__name__}"
