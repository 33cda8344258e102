"""Break-glass: an emergency grant that applies at once, without prior approval, and is reviewed
after the fact.

Who may do what (enforced here, tested in tests/breakglass/):

- File (`break_glass_submit`): a member of the requesting team who is in the `requesters` group
  (platform admins and reviewers are not exempt: break-glass is for the people on call), only on
  an instance whose environment allows it (BreakGlassSetting; prod off unless an admin switches
  it on), only a `grant` (no DDL, no role creation) of the data privileges in
  BREAK_GLASS_PRIVILEGES on a schema the requesting team owns, for at most
  PORTAL_BREAK_GLASS_MAX_HOURS, with an incident reference in the allow-listed format
  (INCIDENT_REF). Anything else is refused before anything is written, the error naming the field.
- The request is recorded as submitted, then approved by break-glass (`request.break_glass`) with
  the approval policy it bypassed (`policy.bypassed`), and queued through the outbox in the same
  transaction: the normal engine applies it (plan re-rendered and hash-checked, exactly-once
  marker, `sql.executed`, `request.applied`). Every reviewer and admin is notified at once
  (e-mail, and the team's webhook).
- The grant carries `expires_at` = now + the duration, so the existing expiry machinery
  (provisioning/expiry.py) files the system revoke when it is due, and the engine ends the role's
  sessions when the revoke applies.
- Review (`break_glass_review`): a reviewer or platform admin who is not the requester
  acknowledges it or flags it as misuse, with a comment, within BREAK_GLASS_REVIEW_HOURS. Misuse
  revokes a grant still active at once (the expiry path, audited as `grant.expired`).
  Overdue reviews are notified once (`break_glass_overdue`, a beat job).
- Switch (`break_glass_setting_update`): platform admins only, audited as `policy.changed`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import batched as audit_batched
from audit.services import record
from portal.choices import (
    BREAK_GLASS_PRIVILEGES,
    BreakGlassOutcome,
    Environment,
    Persona,
    RequestStatus,
    RequestType,
)
from portal.errors import Conflict, InvalidPayload, PolicyViolation
from portal.models import BreakGlass, BreakGlassSetting, ChangeRequest, Grant, Instance, Team
from portal.models.breakglass import BREAK_GLASS_DEFAULT_ENABLED
from portal.notifications import notify_enqueue
from portal.personas import is_admin, is_reviewer, user_groups
from portal.services.requests import MAX_COMMENT, MAX_JUSTIFICATION, request_preview
from provisioning.expiry import expire_grant
from provisioning.outbox import enqueue_apply

# An incident reference as ticketing systems write them: a project key and a number
# (INC-1234, OPS-42, SEV1-7), or a PagerDuty-style id (P1A2B3C). Nothing else: it is shown in
# pages, mails and webhooks.
INCIDENT_REF = re.compile(r"^(?:[A-Z][A-Z0-9]{1,15}-[0-9]{1,12}|P[A-Z0-9]{5,13})$")
BREAK_GLASS_REVIEW_HOURS = 24


def max_minutes() -> int:
    """The longest break-glass grant, in minutes (PORTAL_BREAK_GLASS_MAX_HOURS, read per call)."""
    return max(1, int(float(settings.BREAK_GLASS_MAX_HOURS) * 60))


def break_glass_enabled(environment: str) -> bool:
    row = BreakGlassSetting.objects.filter(environment=environment).values_list("enabled", flat=True).first()
    return BREAK_GLASS_DEFAULT_ENABLED.get(environment, False) if row is None else bool(row)


def break_glass_settings() -> list[dict]:
    """Every environment with whether break-glass is on, and whether that is the default."""
    rows = {s.environment: s for s in BreakGlassSetting.objects.all()}
    return [{"environment": env, "enabled": rows[env].enabled if env in rows else BREAK_GLASS_DEFAULT_ENABLED[env],
             "default": env not in rows, "updated_by": rows[env].updated_by if env in rows else "",
             "updated_at": rows[env].updated_at if env in rows else None}
            for env in Environment.values]


def break_glass_setting_update(*, actor: Any, environment: str, enabled: Any, actor_ip: str | None = None) -> dict:
    if not is_admin(actor):
        raise PolicyViolation("only platform admins switch break-glass on or off")
    if environment not in Environment.values:
        raise InvalidPayload.field("environment", f"one of: {', '.join(Environment.values)}")
    if not isinstance(enabled, bool):
        raise InvalidPayload.field("enabled", "true or false")
    with transaction.atomic():
        before = break_glass_enabled(environment)
        BreakGlassSetting.objects.update_or_create(environment=environment,
                                                   defaults={"enabled": enabled, "updated_by": actor.username})
        record("policy.changed", actor=actor, actor_ip=actor_ip, object_type="break_glass_setting",
               object_id=environment, outcome="changed",
               details={"environment": environment, "setting": "break_glass", "before": before, "after": enabled})
    return {"environment": environment, "enabled": enabled}


# --- filing ----------------------------------------------------------------------------------------


def _check_incident(incident_ref: Any) -> str:
    if not isinstance(incident_ref, str) or not incident_ref.strip():
        raise InvalidPayload.field("incident_ref", "give the incident this emergency access is for")
    value = incident_ref.strip()
    if not INCIDENT_REF.match(value):
        raise InvalidPayload.field("incident_ref", "an incident reference such as INC-1234 (a project key in capitals, "
                                                   "a dash and a number) or a PagerDuty id such as P1A2B3C")
    return value


def _check_duration(duration_minutes: Any) -> int:
    limit = max_minutes()
    if isinstance(duration_minutes, bool) or not isinstance(duration_minutes, int | str):
        raise InvalidPayload.field("duration_minutes", f"a whole number of minutes from 1 to {limit}")
    try:
        minutes = int(str(duration_minutes).strip())
    except ValueError:
        raise InvalidPayload.field("duration_minutes", f"a whole number of minutes from 1 to {limit}") from None
    if not 1 <= minutes <= limit:
        raise InvalidPayload.field("duration_minutes", f"from 1 to {limit} minutes "
                                                       f"(break-glass lasts at most {limit / 60:g} hours)")
    return minutes


def _check_who(user: Any, team: Team, instance: Instance) -> None:
    if Persona.REQUESTERS.value not in user_groups(user) or not team.memberships.filter(user=user).exists():
        raise PolicyViolation(f"only requesters of team {team} may break the glass for it",
                              errors={"team": [f"you are not a requester of team {team}"]})
    if not break_glass_enabled(instance.environment):
        raise PolicyViolation(f"break-glass is switched off for {instance.get_environment_display()}",
                              errors={"instance": [f"break-glass is switched off for the {instance.environment} "
                                                   f"environment"]})


def _check_payload(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise InvalidPayload.field("payload", "an object: a grant's role, database, schema and privileges")
    privileges = payload.get("privileges")
    if isinstance(privileges, list):
        refused = sorted({p for p in privileges if isinstance(p, str)} - set(BREAK_GLASS_PRIVILEGES))
        if refused:
            raise InvalidPayload.field("payload.privileges", f"break-glass gives only "
                                       f"{', '.join(BREAK_GLASS_PRIVILEGES)}; not {', '.join(refused)}")
    if payload.get("expires_at") not in (None, ""):
        raise InvalidPayload.field("payload.expires_at", "set by duration_minutes for break-glass")
    return dict(payload)


def break_glass_submit(*, user: Any, actor_ip: str | None, type: str, instance: Instance, team: Team,
                       justification: Any, incident_ref: Any, duration_minutes: Any, payload: Any) -> ChangeRequest:
    """File a break-glass grant: validated like any grant, then approved by break-glass and queued."""
    if type != RequestType.GRANT:
        raise InvalidPayload.field("type", "break-glass is only for grants: no DDL, no new roles, no other change")
    justification = justification.strip() if isinstance(justification, str) else ""
    if not justification:
        raise InvalidPayload.field("justification", "say what the emergency access is for")
    if len(justification) > MAX_JUSTIFICATION:
        raise InvalidPayload.field("justification", f"at most {MAX_JUSTIFICATION} characters")
    incident = _check_incident(incident_ref)
    minutes = _check_duration(duration_minutes)
    _check_who(user, team, instance)
    payload = _check_payload(payload)
    now = timezone.now()
    ends_at = now + timedelta(minutes=minutes)
    payload["expires_at"] = ends_at.isoformat()
    preview = request_preview(user=user, type=RequestType.GRANT, instance=instance, team=team, payload=payload)
    if preview["owner_team_id"] != team.pk:
        raise PolicyViolation("break-glass reaches only a schema of the requesting team",
                              errors={"payload.schema": [f"not a schema of team {team}: ask for a normal grant"]})
    validated = preview["payload"]
    with transaction.atomic(), audit_batched():
        request = ChangeRequest.objects.create(
            type=RequestType.GRANT, instance=instance, team=team, requester=user, justification=justification,
            payload=validated, plan=preview["plan"], plan_hash=preview["plan_hash"], risk=preview["risk"],
            risk_reasons=preview["risk_reasons"], findings=preview["findings"], expires_at=ends_at,
            submitted_ip=actor_ip or None, owner_team=preview["owner_team_row"], break_glass=True,
            status=RequestStatus.APPROVED, approved_at=now,
        )
        BreakGlass.objects.create(request=request, incident_ref=incident, duration_minutes=minutes, ends_at=ends_at,
                                  review_due_at=now + timedelta(hours=BREAK_GLASS_REVIEW_HOURS))
        common = {"object_type": "request", "object_id": request.pk, "instance": instance,
                  "database": validated.get("database", ""), "request_id": request.pk}
        record("request.submitted", actor=user, actor_ip=actor_ip, outcome=RequestStatus.SUBMITTED,
               details={"type": request.type, "team": team.name, "risk": request.risk, "plan_hash": request.plan_hash,
                        "plan": request.plan, "break_glass": True}, **common)
        record("request.break_glass", actor=user, actor_ip=actor_ip, outcome=RequestStatus.APPROVED,
               details={"incident_ref": incident, "duration_minutes": minutes, "ends_at": ends_at.isoformat(),
                        "plan_hash": request.plan_hash, "justification": justification[:2000]}, **common)
        requirement = preview["requirement"]
        record("policy.bypassed", actor=user, actor_ip=actor_ip, outcome="bypassed",
               details={"incident_ref": incident, "environment": instance.environment, "request_type": request.type,
                        "risk": request.risk, "would_require": requirement.as_dict(), "break_glass": True},
               **{**common, "object_type": "approval_policy",
                  "object_id": f"{instance.environment}/{request.type}/{request.risk}"})
        enqueue_apply(request)  # approved → queued, request.queued, the outbox row
        request_id = request.pk
        transaction.on_commit(lambda: notify_enqueue(request_id, "break_glass"))
    return request


# --- post-hoc review ---------------------------------------------------------------------------------


def break_glass_review(*, request: ChangeRequest, reviewer: Any, outcome: Any, comment: Any,
                       actor_ip: str | None = None) -> BreakGlass:
    """Close the post-hoc review of one break-glass request (acknowledged, or misuse)."""
    if not is_reviewer(reviewer):
        raise PolicyViolation("only reviewers and platform admins review break-glass access")
    if outcome not in BreakGlassOutcome.values:
        raise InvalidPayload.field("outcome", f"one of: {', '.join(BreakGlassOutcome.values)}")
    if not isinstance(comment, str) or not comment.strip():
        raise InvalidPayload.field("comment", "say what you checked")
    if len(comment) > MAX_COMMENT:
        raise InvalidPayload.field("comment", f"at most {MAX_COMMENT} characters")
    comment = comment.strip()
    with transaction.atomic():
        bg = (BreakGlass.objects.select_for_update(of=("self",)).select_related("request", "request__instance")
              .filter(request_id=request.pk).first())
        if bg is None:
            raise Conflict("this request is not a break-glass request")
        if bg.request.requester_id == reviewer.pk:
            raise PolicyViolation("you cannot review your own break-glass access")
        if bg.reviewed_at is not None:
            raise Conflict(f"already reviewed ({bg.review_outcome}) by another reviewer")
        now = timezone.now()
        bg.reviewed_at, bg.reviewed_by, bg.review_outcome, bg.review_comment = now, reviewer, outcome, comment
        bg.save(update_fields=["reviewed_at", "reviewed_by", "review_outcome", "review_comment"])
        record("request.break_glass_reviewed", actor=reviewer, actor_ip=actor_ip, object_type="request",
               object_id=bg.request_id, instance=bg.request.instance, request_id=bg.request_id, outcome=outcome,
               details={"incident_ref": bg.incident_ref, "comment": comment[:2000],
                        "overdue": now > bg.review_due_at})
        if outcome == BreakGlassOutcome.MISUSE:
            # Misuse ends the access now rather than at the end of its time box: the expiry path,
            # so it is the same system revoke (and session termination) as when time is up.
            for grant in Grant.objects.filter(request_id=bg.request_id, revoked_at__isnull=True):
                Grant.objects.filter(pk=grant.pk).update(expires_at=now)
                transaction.on_commit(lambda grant=grant: expire_grant(grant))
    return bg


def break_glass_overdue(*, now: Any = None) -> list[int]:
    """The beat job: notify (once) every break-glass request whose post-hoc review is overdue."""
    now = now or timezone.now()
    notified = []
    with transaction.atomic():
        due = list(BreakGlass.objects.select_for_update(skip_locked=True, of=("self",)).select_related("request__instance")
                   .filter(reviewed_at__isnull=True, review_due_at__lt=now, overdue_notified_at__isnull=True)
                   .order_by("review_due_at")[:200])
        for bg in due:
            bg.overdue_notified_at = now
            bg.save(update_fields=["overdue_notified_at"])
            record("request.break_glass_overdue", object_type="request", object_id=bg.request_id,
                   instance=bg.request.instance, request_id=bg.request_id, outcome="overdue",
                   details={"incident_ref": bg.incident_ref, "review_due_at": bg.review_due_at.isoformat()})
            notified.append(bg.request_id)
        if notified:
            transaction.on_commit(lambda: notify_enqueue(notified, "break_glass_overdue"))
    return notified
