"""Sending the notifications of request transitions: e-mail and the team's webhook (JSON).

The tasks `portal.notify_request(s)` (portal/tasks.py) call `notify_send(_many)`, published by
portal.notifications.notify_enqueue after a transition commits. The task sends the e-mail (console backend in the demo)
and POSTs a JSON body to the team's webhook_url when one is set, under the rules of
portal.outbound (allowed targets checked on the resolved address, no redirects); a webhook
refused or failed is an audit event (`notify.webhook_refused`, `notify.webhook_failed`).
"""

from __future__ import annotations

import json
import smtplib

import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db.models import Q

from audit.services import record
from portal import outbound
from portal.choices import Persona
from portal.models import Alert, ChangeRequest, Instance, Team
from portal.notifications import EVENTS
from portal.selectors.approvals import requirement_of, team_leads

log = structlog.get_logger(__name__)

WEBHOOK_TIMEOUT = 5
# Break-glass is reviewed after the fact: every reviewer and admin hears of it at once, and again
# when its post-hoc review is overdue (portal/services/breakglass.py).
BREAK_GLASS_EVENTS = {"break_glass", "break_glass_overdue"}


def _break_glass_part(request) -> dict:
    if not request.break_glass:
        return {}
    record_ = getattr(request, "break_glass_record", None)
    if record_ is None:
        return {"break_glass": {}}
    return {"break_glass": {"incident_ref": record_.incident_ref, "ends_at": record_.ends_at.isoformat(),
                            "review_due_at": record_.review_due_at.isoformat(),
                            "reviewed": record_.reviewed_at is not None}}


def _reviewers_and_admins() -> set[str]:
    users = User.objects.filter(is_active=True).filter(
        Q(groups__name__in=[Persona.REVIEWERS.value, Persona.ADMINS.value]) | Q(is_superuser=True))
    return {e for e in users.values_list("email", flat=True) if e}


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
        **_break_glass_part(request),
    }


def _recipients(request, event: str) -> list[str]:
    emails = set()
    if request.requester and request.requester.email:
        emails.add(request.requester.email)
    if event in BREAK_GLASS_EVENTS:
        emails.update(_reviewers_and_admins())
    if event == "submitted":
        requirement = requirement_of(request)
        reviewers = User.objects.filter(groups__name__in=requirement.approver_groups, is_active=True)
        emails.update(e for e in reviewers.values_list("email", flat=True) if e)
        if requirement.owner_lead_team is not None:
            leads = User.objects.filter(pk__in=team_leads(requirement.owner_lead_team))
            emails.update(e for e in leads.values_list("email", flat=True) if e)
    return sorted(emails)


def notify_send(request_id: int, event: str) -> dict:
    """Send the e-mail and the webhook for one transition; returns what was sent (for tests)."""
    return notify_send_many([request_id], event).get(request_id, {"email": [], "webhook": None})


def notify_send_many(request_ids: list[int], event: str) -> dict[int, dict]:
    """The same transition of several requests, read in one query; what was sent, by id."""
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
        webhook = _webhook_send(request, event, body) if request.team.webhook_url else None
        sent[request.pk] = {"email": mailed, "webhook": webhook}
    return sent


def _webhook_send(request, event: str, body: dict) -> str:
    """POST the body to the team's webhook; a refusal or failure is logged and audited, never raised.

    Returns the HTTP status when delivered, "not allowed" when the target rules refused the URL
    (nothing was dialled), else "failed: <reason>".
    """
    team = request.team
    delivery = outbound.post_json(team.webhook_url, body, timeout=WEBHOOK_TIMEOUT)
    if delivery.outcome == "delivered":
        return str(delivery.status)
    try:
        target = outbound.parse_target(team.webhook_url).display
    except outbound.TargetRefused:
        target = ""
    action = "notify.webhook_refused" if delivery.outcome == "refused" else "notify.webhook_failed"
    log.warning(action, request=request.pk, team=team.name, notification=event, reason=delivery.reason)
    # Only scheme, host and port: a webhook's path often holds the secret token of the receiver.
    record(action, object_type="team", object_id=team.pk, request_id=request.pk,
           instance=request.instance, outcome="failed",
           details={"team": team.name, "notification": event, "target": target, "reason": delivery.reason,
                    "status": delivery.status, "address": delivery.address})
    return "not allowed" if delivery.outcome == "refused" else f"failed: {delivery.reason}"


def alert_notification_body(alert, event: str) -> dict:
    return {
        "event": f"monitoring.alert_{event}",
        "alert": {
            "id": alert.pk, "kind": alert.kind, "status": alert.status, "instance": alert.instance.name,
            "value": alert.value, "threshold": alert.threshold, "detail": alert.detail,
            "opened_at": alert.opened_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "url": f"{settings.PORTAL_BASE_URL}/instances/{alert.instance_id}/monitoring/",
        },
    }


def alert_notify_send(alert_id: int, event: str) -> dict:
    """E-mail reviewers and admins, and POST to the webhook of each team owning a schema on the
    instance, that a monitoring alert opened or resolved. Returns what was sent (for tests)."""
    alert = Alert.objects.select_related("instance").filter(pk=alert_id).first()
    if alert is None or event not in ("opened", "resolved"):
        return {"email": [], "webhooks": {}}
    body = alert_notification_body(alert, event)
    recipients = sorted(_reviewers_and_admins())
    mailed: list[str] = []
    if recipients:
        try:
            send_mail(subject=f"[dbportal] {alert.instance.name}: {alert.get_kind_display()} alert {event}",
                      message=json.dumps(body, indent=2), from_email=None, recipient_list=recipients)
            mailed = recipients
        except (smtplib.SMTPException, OSError) as exc:
            log.warning("notify.email_failed", alert=alert.pk, notification=event, error=type(exc).__name__)
    webhooks: dict[str, str] = {}
    # A team's webhook hears of its instance's alert, not of the sessions in it: the detail names
    # roles and pids of every team (reviewers and admins get it by e-mail).
    team_body = {**body, "alert": {**body["alert"], "detail": ""}}
    teams = Team.objects.filter(schemas__instance=alert.instance).exclude(webhook_url="").distinct()
    for team in teams:
        delivery = outbound.post_json(team.webhook_url, team_body, timeout=WEBHOOK_TIMEOUT)
        if delivery.outcome == "delivered":
            webhooks[team.name] = str(delivery.status)
            continue
        action = "notify.webhook_refused" if delivery.outcome == "refused" else "notify.webhook_failed"
        log.warning(action, alert=alert.pk, team=team.name, notification=event, reason=delivery.reason)
        record(action, object_type="team", object_id=team.pk, instance=alert.instance, outcome="failed",
               details={"team": team.name, "notification": f"alert_{event}", "alert": alert.pk,
                        "reason": delivery.reason, "status": delivery.status, "address": delivery.address})
        webhooks[team.name] = "not allowed" if delivery.outcome == "refused" else f"failed: {delivery.reason}"
    return {"email": mailed, "webhooks": webhooks}


def backup_notify_send(instance_id: int, event: str, detail: str) -> dict:
    """E-mail reviewers and admins that an instance's backups failed or are late (issue #20,
    portal/services/backups.py). Returns what was sent (for tests)."""
    instance = Instance.objects.filter(pk=instance_id).first()
    if instance is None or event not in ("failed", "late"):
        return {"email": []}
    body = {"event": f"backup.{event}", "instance": instance.name, "detail": detail,
            "url": f"{settings.PORTAL_BASE_URL}/instances/{instance.pk}/backups/"}
    recipients = sorted(_reviewers_and_admins())
    if not recipients:
        return {"email": []}
    try:
        send_mail(subject=f"[dbportal] {instance.name}: backups {event}", message=json.dumps(body, indent=2),
                  from_email=None, recipient_list=recipients)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("notify.email_failed", instance=instance.pk, notification=f"backup_{event}",
                    error=type(exc).__name__)
        return {"email": []}
    return {"email": recipients}
