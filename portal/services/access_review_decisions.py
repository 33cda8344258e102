"""Access reviews once open (issue #18): certifiers decide items, admins reassign them, and beat
reminds certifiers and acts at the deadline (an automatic revoke or an escalation). Opening a
campaign, closing it and its report are portal/services/access_reviews.py's.

Who may do what (tested in tests/portal/test_access_reviews.py):
- decide an item (keep, revoke, shorten, with a comment): its certifier only — never a holder of
  the privilege, never anyone else, admins included (an admin reassigns the item instead);
- reassign an item to another certifier: platform admins;
- the reminders and the deadline run as the portal itself (beat, portal/tasks.py).

A revoke decision becomes a system revoke request through the normal engine: its plan is rendered
from the privilege (a portal grant's exact shape, or the privilege seen on the cluster), the
certifier's decision is recorded as its one approval on that plan hash (the owner of the access
took it back; a revoke only ever removes), and it is queued through the outbox like any other
approved request. The campaign follows each such request until it is applied.

Events (audit, each in the transaction of its change): review.item_decided (one per item, bulk
decisions included), review.item_reassigned, review.escalated, review.reminder_sent.
"""

from __future__ import annotations

import json
import smtplib
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import batched as audit_batched
from audit.services import record
from portal import outbound
from portal.choices import (
    CampaignStatus,
    CertificationDecision,
    Decision,
    MembershipRole,
    RequestStatus,
    RequestType,
    UnansweredAction,
)
from portal.errors import Conflict, InvalidPayload, PolicyViolation, TargetUnavailable
from portal.models import (
    AccessReviewCampaign,
    AccessReviewItem,
    Approval,
    ChangeRequest,
    Grant,
    Membership,
    Team,
)
from portal.personas import is_admin
from portal.risk import owner_team_id_for, risk_assess
from portal.selectors.plan_context import plan_context_for
from portal.services.access_reviews import _close, _text
from provisioning.connections import describe_error
from provisioning.expiry import revoke_payload_for
from provisioning.inventory import inventory_refresh
from provisioning.outbox import enqueue_apply
from provisioning.plans import module_for, plan_hash, plan_text

log = structlog.get_logger(__name__)

MAX_COMMENT = 2000
MAX_BULK = 500
# Reminders go out at most once a day per campaign, while it is open and before its deadline.
REMINDER_INTERVAL = timedelta(hours=24)


# --- decisions --------------------------------------------------------------------------------


def _revoke_request(item: AccessReviewItem, *, certifier: User | None, comment: str, actor_ip: str | None,
                    inventory_ok: set[int]) -> ChangeRequest:
    """File, approve (by the certifier's decision) and queue the revoke of one item, in the
    caller's transaction. A portal grant is taken back exactly as expiry does; a privilege from
    outside is validated against the instance's inventory, refreshed by the caller."""
    instance = item.instance
    if item.grant is not None and item.grant.revoked_at is None:
        grant = Grant.objects.select_related("instance", "request").get(pk=item.grant_id)
        payload = revoke_payload_for(grant)
        team = grant.team
    else:
        team = Team.objects.filter(pk=item.owning_team_id).first()
        if team is None:
            raise Conflict(f"item #{item.pk}: no team owns this privilege; revoke it from the drift page")
        if item.instance_id not in inventory_ok:
            raise TargetUnavailable(f"{instance.name}: its catalog could not be read; try again")
        raw = {"role": item.role, "database": item.database, "schema": item.schema,
               "privileges": list(item.privileges),
               "tables": item.tables if item.kind in ("tables", "default") else None,
               "default_privileges": item.kind == "default"}
        if item.kind == "default":
            raw["tables"] = "all"
        ctx = plan_context_for(instance, team, None, request_type=RequestType.REVOKE)
        payload = module_for(RequestType.REVOKE).validate(raw, ctx)
    plan = plan_text(module_for(RequestType.REVOKE).render(payload, secrets=None))
    owner_team_id = owner_team_id_for(request_type=RequestType.REVOKE, payload=payload, instance=instance)
    risk, reasons = risk_assess(request_type=RequestType.REVOKE, payload=payload, environment=instance.environment,
                                team_id=team.pk, owner_team_id=owner_team_id)
    who = certifier.username if certifier is not None else "the deadline (unanswered)"
    now = timezone.now()
    request = ChangeRequest.objects.create(
        type=RequestType.REVOKE, instance=instance, team=team, owner_team_id=owner_team_id, requester=None,
        justification=f"access review #{item.campaign_id}, item #{item.pk}: revoked by {who}"
                      + (f": {comment}" if comment else ""),
        payload=payload, plan=plan, plan_hash=plan_hash(plan), risk=risk, risk_reasons=reasons,
        status=RequestStatus.APPROVED, approved_at=now, submitted_ip=actor_ip or None)
    approvers = []
    if certifier is not None:
        Approval.objects.create(request=request, reviewer=certifier, decision=Decision.APPROVE,
                                comment=comment[:MAX_COMMENT], plan_hash=request.plan_hash)
        approvers = [certifier.username]
    details = {"type": "revoke", "team": team.name, "risk": risk, "plan_hash": request.plan_hash, "plan": plan,
               "reason": "access review", "campaign": item.campaign_id, "item": item.pk}
    record("request.submitted", object_type="request", object_id=request.pk, instance=instance,
           database=item.database, request_id=request.pk, outcome=RequestStatus.SUBMITTED, details=details)
    record("request.approved", actor=certifier, actor_ip=actor_ip, object_type="request", object_id=request.pk,
           instance=instance, database=item.database, request_id=request.pk, approvers=approvers,
           outcome=RequestStatus.APPROVED,
           details={"plan_hash": request.plan_hash, "reason": "access review decision", "campaign": item.campaign_id,
                    "item": item.pk, "auto_approved": certifier is None})
    enqueue_apply(request)  # approved → queued, request.queued and the outbox row
    return request


def _refresh_inventories(items: list[AccessReviewItem]) -> set[int]:
    """Refresh the inventory of each instance an outside privilege is revoked on (the revoke is
    checked against the cluster as it is). Returns the ids refreshed; unreachable ones are left out."""
    refreshed: set[int] = set()
    for instance in {i.instance_id: i.instance for i in items if i.grant_id is None}.values():
        try:
            inventory_refresh(instance)
            refreshed.add(instance.pk)
        except Exception as exc:  # noqa: BLE001 - one unreachable instance leaves its items pending
            log.warning("access_review.inventory_failed", instance=instance.pk, error=describe_error(exc))
    return refreshed


def _check_expiry(value: Any, item: AccessReviewItem, now: datetime) -> datetime:
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise InvalidPayload.field("expires_at", "a date and time with its time zone")
    if value <= now:
        raise InvalidPayload.field("expires_at", "must be in the future")
    current = item.grant.expires_at if item.grant is not None else None
    if current is not None and value >= current:
        raise InvalidPayload.field("expires_at", f"must be before the current expiry ({current.isoformat()})")
    return value


def items_decide(*, campaign: AccessReviewCampaign, user: Any, item_ids: Any, decision: Any, comment: Any,
                 expires_at: Any = None, actor_ip: str | None = None) -> list[AccessReviewItem]:
    """Decide one or several items of a campaign (a bulk decision over filtered items) with one
    comment. All or nothing: one item the user may not decide refuses the whole call. One
    `review.item_decided` event per item."""
    if decision not in CertificationDecision.values:
        raise InvalidPayload.field("decision", f"one of: {', '.join(CertificationDecision.values)}")
    comment = _text(comment, "comment", limit=MAX_COMMENT)
    if not isinstance(item_ids, list) or not item_ids or len(item_ids) > MAX_BULK \
            or any(isinstance(i, bool) or not isinstance(i, int) for i in item_ids):
        raise InvalidPayload.field("items", f"a list of 1 to {MAX_BULK} item ids")
    ids = sorted(set(item_ids))
    now = timezone.now()
    preview = list(AccessReviewItem.objects.filter(campaign=campaign, pk__in=ids).select_related("instance"))
    if any(item.certifier_id != user.pk for item in preview):
        # Refused before the revoke's inventory read dials a cluster (checked again under the lock).
        raise PolicyViolation("an item listed is assigned to another certifier")
    inventory_ok = _refresh_inventories(preview) if decision == CertificationDecision.REVOKE else set()
    with transaction.atomic(), audit_batched():
        locked = AccessReviewCampaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.status != CampaignStatus.OPEN:
            raise Conflict("the campaign is closed")
        items = list(AccessReviewItem.objects.select_for_update(of=("self",)).filter(campaign=locked, pk__in=ids)
                     .select_related("instance", "grant", "certifier").order_by("pk"))
        if len(items) != len(ids):
            missing = sorted(set(ids) - {i.pk for i in items})
            raise InvalidPayload.field("items", f"no item {missing[0]} in this campaign")
        for item in items:
            if item.certifier_id != user.pk:
                raise PolicyViolation(f"item #{item.pk} is assigned to another certifier")
            if user.username in item.holders:
                raise PolicyViolation(f"item #{item.pk}: nobody certifies their own access")
            if item.decision:
                raise Conflict(f"item #{item.pk} is already decided ({item.decision})")
        new_expiry = None
        if decision == CertificationDecision.SHORTEN:
            for item in items:
                if item.grant is None or item.grant.revoked_at is not None:
                    raise Conflict(f"item #{item.pk}: only a grant the portal made can be given an expiry; "
                                   "keep or revoke it")
                new_expiry = _check_expiry(expires_at, item, now)
        for item in items:
            _apply_decision(item, decision=decision, decided_by=user, comment=comment, new_expiry=new_expiry,
                            actor_ip=actor_ip, inventory_ok=inventory_ok, now=now)
        _close_if_done(locked, now=now)
    return items


def _apply_decision(item: AccessReviewItem, *, decision: str, decided_by: User | None, comment: str,
                    new_expiry: datetime | None, actor_ip: str | None, inventory_ok: set[int], now: datetime) -> None:
    details: dict[str, Any] = {"campaign": item.campaign_id, "decision": decision, "comment": comment,
                               "role": item.role, "database": item.database, "schema": item.schema,
                               "privileges": item.privileges, "source": item.source,
                               "automatic": decided_by is None}
    if decision == CertificationDecision.SHORTEN and new_expiry is not None:
        Grant.objects.filter(pk=item.grant_id).update(expires_at=new_expiry)
        item.new_expires_at = new_expiry
        details["expires_at"] = new_expiry.isoformat()
        details["previous_expires_at"] = item.grant.expires_at.isoformat() if item.grant.expires_at else None
    if decision == CertificationDecision.REVOKE:
        item.revoke_request = _revoke_request(item, certifier=decided_by, comment=comment, actor_ip=actor_ip,
                                              inventory_ok=inventory_ok)
        details["request"] = item.revoke_request.pk
    item.decision, item.comment, item.decided_at, item.decided_by = decision, comment, now, decided_by
    item.save(update_fields=["decision", "comment", "decided_at", "decided_by", "new_expires_at", "revoke_request"])
    outcome = {"keep": "kept", "revoke": "revoked", "shorten": "shortened"}[decision]
    record("review.item_decided", actor=decided_by, actor_ip=actor_ip, object_type="access_review_item",
           object_id=item.pk, instance=item.instance, database=item.database,
           request_id=item.revoke_request_id, outcome=outcome, details=details)


def item_reassign(*, item: AccessReviewItem, user: Any, certifier: Any, comment: Any = "",
                  actor_ip: str | None = None) -> AccessReviewItem:
    """A platform admin gives an undecided item to another certifier (not one of its holders)."""
    if not is_admin(user):
        raise PolicyViolation("only platform admins reassign an access review item")
    comment = _text(comment, "comment", limit=MAX_COMMENT, required=False)
    if not isinstance(certifier, User) or not certifier.is_active:
        raise InvalidPayload.field("certifier", "an active user")
    with transaction.atomic():
        item = AccessReviewItem.objects.select_for_update(of=("self",)).select_related("campaign", "instance",
                                                                                      "certifier").get(pk=item.pk)
        if item.campaign.status != CampaignStatus.OPEN or item.decision:
            raise Conflict("only an undecided item of an open campaign can be reassigned")
        if certifier.username in item.holders:
            raise InvalidPayload.field("certifier", "holds this privilege: nobody certifies their own access")
        previous = item.certifier.username if item.certifier else None
        item.certifier, item.certifier_reason = certifier, "reassigned"
        item.save(update_fields=["certifier", "certifier_reason"])
        record("review.item_reassigned", actor=user, actor_ip=actor_ip, object_type="access_review_item",
               object_id=item.pk, instance=item.instance, outcome="reassigned",
               details={"campaign": item.campaign_id, "from": previous, "to": certifier.username,
                        "comment": comment})
    return item


# --- reminders and the deadline ---------------------------------------------------------------


def _close_if_done(campaign: AccessReviewCampaign, *, now: datetime) -> None:
    if campaign.status == CampaignStatus.OPEN and not campaign.items.filter(decision="").exists():
        _close(campaign, now=now, reason="every item decided")


def lead_of(user: User, *, exclude: set[str]) -> User | None:
    """The certifier's own lead: a lead of a team they belong to as a member (the first such team
    by name); None when they lead every team they are in."""
    teams = Membership.objects.filter(user=user, role=MembershipRole.MEMBER).values("team_id")
    leads = (User.objects.filter(is_active=True, memberships__team_id__in=teams,
                                 memberships__role=MembershipRole.LEAD)
             .exclude(pk=user.pk).exclude(username__in=exclude).order_by("memberships__team__name", "pk"))
    return leads.first()


def campaigns_process_deadlines(*, now: datetime | None = None) -> list[int]:
    """The beat job: each open campaign past its deadline acts on its unanswered items once —
    revoke (a system revoke request, no certifier) or escalate (to the certifier's own lead, else
    the fallback certifier). Returns the ids of the campaigns processed."""
    now = now or timezone.now()
    processed = []
    due = AccessReviewCampaign.objects.filter(status=CampaignStatus.OPEN, deadline__lte=now,
                                              deadline_processed_at__isnull=True).order_by("deadline")
    for campaign in due:
        try:
            campaign_process_deadline(campaign, now=now)
            processed.append(campaign.pk)
        except Exception:
            log.exception("access_review.deadline_failed", campaign=campaign.pk)
    return processed


def campaign_process_deadline(campaign: AccessReviewCampaign, *, now: datetime) -> None:
    # An item escalated once is its new certifier's to decide: the deadline acts on it no more.
    pending = list(campaign.items.filter(decision="", escalated_at__isnull=True).select_related("instance", "grant", "certifier",
                                                                      "campaign__fallback_certifier"))
    inventory_ok = (_refresh_inventories(pending) if campaign.unanswered_action == UnansweredAction.REVOKE
                    else set())
    failed = 0
    for item in pending:
        try:
            with transaction.atomic(), audit_batched():
                item = (AccessReviewItem.objects.select_for_update(of=("self",))
                        .select_related("instance", "grant", "certifier", "campaign__fallback_certifier")
                        .get(pk=item.pk))
                if item.decision:
                    continue
                if campaign.unanswered_action == UnansweredAction.REVOKE:
                    try:
                        with transaction.atomic():
                            _apply_decision(item, decision=CertificationDecision.REVOKE, decided_by=None,
                                            comment="unanswered at the deadline", new_expiry=None, actor_ip=None,
                                            inventory_ok=inventory_ok, now=now)
                    except (Conflict, InvalidPayload) as exc:
                        # Not revocable by a request (no team owns it, or the plan refuses it): a
                        # person must decide, so it goes up as an escalation would.
                        _escalate(item, now=now, reason=f"not revoked automatically: {exc.detail}")
                else:
                    _escalate(item, now=now)
        except Exception as exc:  # noqa: BLE001 - one item must not hold back the others; retried next run
            failed += 1
            log.warning("access_review.deadline_item_failed", item=item.pk, error=str(exc)[:200])
    if failed:
        return  # the next run tries the items left
    with transaction.atomic():
        locked = AccessReviewCampaign.objects.select_for_update().get(pk=campaign.pk)
        locked.deadline_processed_at = now
        locked.save(update_fields=["deadline_processed_at"])
        _close_if_done(locked, now=now)


def _escalate(item: AccessReviewItem, *, now: datetime, reason: str = "unanswered at the deadline") -> None:
    previous = item.certifier
    holders = set(item.holders)
    target = lead_of(previous, exclude=holders) if previous is not None else None
    if target is None:
        fallback = item.campaign.fallback_certifier
        target = fallback if fallback.username not in holders and fallback != previous else None
    if target is None:
        log.warning("access_review.escalation_without_target", item=item.pk)
    item.escalated_from, item.escalated_at = previous, now
    if target is not None:
        item.certifier, item.certifier_reason = target, "escalated"
    item.save(update_fields=["certifier", "certifier_reason", "escalated_from", "escalated_at"])
    record("review.escalated", object_type="access_review_item", object_id=item.pk, instance=item.instance,
           database=item.database, outcome="escalated" if target is not None else "failed",
           details={"campaign": item.campaign_id, "from": previous.username if previous else None,
                    "to": target.username if target else None,
                    "reason": reason if target is not None else f"{reason}; no lead above the certifier and no "
                                                                  "fallback"})


def _mail(recipients: list[str], subject: str, body: dict) -> list[str]:
    if not recipients:
        return []
    try:
        send_mail(subject=subject, message=json.dumps(body, indent=2), from_email=None, recipient_list=recipients)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("access_review.email_failed", error=type(exc).__name__)
        return []
    return recipients


def campaigns_send_reminders(*, now: datetime | None = None) -> list[int]:
    """The beat job: for each open campaign before its deadline, at most once a day, an e-mail to
    every certifier with undecided items and a webhook POST to each owning team that has one."""
    now = now or timezone.now()
    sent = []
    due = AccessReviewCampaign.objects.filter(status=CampaignStatus.OPEN, deadline__gt=now).filter(
        Q(last_reminder_at__isnull=True) | Q(last_reminder_at__lte=now - REMINDER_INTERVAL))
    for campaign in due:
        with transaction.atomic():
            locked = AccessReviewCampaign.objects.select_for_update(skip_locked=True).filter(pk=campaign.pk).first()
            if locked is None or (locked.last_reminder_at and locked.last_reminder_at > now - REMINDER_INTERVAL):
                continue
            locked.last_reminder_at = now
            locked.save(update_fields=["last_reminder_at"])
            pending = list(locked.items.filter(decision="", certifier__isnull=False)
                           .select_related("certifier", "owning_team"))
            if not pending:
                continue
            per_certifier: dict[str, int] = defaultdict(int)
            emails: dict[str, str] = {}
            teams: dict[int, Team] = {}
            for item in pending:
                per_certifier[item.certifier.username] += 1
                if item.certifier.email:
                    emails[item.certifier.username] = item.certifier.email
                if item.owning_team is not None and item.owning_team.webhook_url:
                    teams[item.owning_team_id] = item.owning_team
            url = f"{settings.PORTAL_BASE_URL}/access-reviews/{locked.pk}/"
            body = {"event": "review.reminder", "campaign": {"id": locked.pk, "name": locked.name, "url": url,
                                                             "deadline": locked.deadline.isoformat(),
                                                             "pending": dict(per_certifier)}}
            mailed = _mail(sorted(emails.values()),
                           f"[dbportal] access review #{locked.pk} ({locked.name}): "
                           f"{len(pending)} item(s) to certify by {locked.deadline:%Y-%m-%d %H:%M} UTC", body)
            webhooks = {}
            for team in teams.values():
                delivery = outbound.post_json(team.webhook_url, body, timeout=5)
                webhooks[team.name] = (str(delivery.status) if delivery.outcome == "delivered"
                                       else f"{delivery.outcome}: {delivery.reason}")
            record("review.reminder_sent", object_type="access_review", object_id=locked.pk, outcome="sent",
                   details={"pending": dict(per_certifier), "emailed": mailed, "webhooks": webhooks,
                            "deadline": locked.deadline.isoformat()})
            sent.append(locked.pk)
    return sent
