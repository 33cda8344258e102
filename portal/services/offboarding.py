"""Offboarding: a deactivated user keeps no access the portal gave them.

`offboard(user, actor=…, reason=…)` in one portal transaction:
- the user is deactivated (`is_active = False`: their web sessions and API tokens stop working at
  the next call, because both check the user's current state) — `user.deactivated`;
- every login role the user asked for that can still sign in gets a system `disable` request
  (`ALTER ROLE … NOLOGIN`; the engine then ends the role's sessions in every database), and every
  grant the user asked for that is still live gets a system `revoke` request (the engine ends the
  grantee's sessions on that database). Both are approved by the offboarding rule and queued
  through the outbox like grant expiry's, so they leave the normal trail (`request.submitted`,
  `request.queued`, `sql.executed`, `session.terminated`, `request.applied`);
- the user's submitted requests are cancelled (`request.cancelled`, actor: who offboarded);
- their API tokens are revoked (`token.revoked`, reason `offboarding`);
- `user.offboarded` records the counts.

Requests of the user already approved or running cannot be stopped halfway; what they create is
picked up by `offboard_sweep()` (beat, and callable by the OIDC sign-in's periodic check), which
offboards again every inactive user that still has live access. Filing is idempotent: a role or
grant with a disable / revoke already on its way (or applied) is not filed twice.

Who may call it: a platform admin (the page and API check it too, and the service checks again),
or the portal itself (`actor=None`: the OIDC sign-in when the provider no longer lists the user,
the sweep). Nobody offboards themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.fields.json import KT
from django.utils import timezone

from audit.services import batched as audit_batched
from audit.services import record
from portal.choices import OPEN_STATUSES, RequestStatus, RequestType, Risk
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import ApiToken, ChangeRequest, Grant, ManagedRole
from portal.notifications import notify_enqueue
from portal.personas import is_admin
from portal.services.names import names_release
from provisioning.expiry import revoke_payload_for
from provisioning.outbox import enqueue_apply
from provisioning.plans import module_for, plan_hash, plan_text

MAX_REASON = 500
# A disable or revoke in one of these states already takes care of the role or grant.
_FILED_STATES = (*OPEN_STATUSES, RequestStatus.APPLIED)


@dataclass
class OffboardingPreview:
    """What offboarding `user` would do now (nothing is changed by computing it)."""

    user: Any
    login_roles: list[ManagedRole] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    open_requests: list[ChangeRequest] = field(default_factory=list)  # submitted: cancelled
    in_flight: list[ChangeRequest] = field(default_factory=list)  # approved / queued / running: swept after
    tokens: list[ApiToken] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"login_roles": len(self.login_roles), "grants": len(self.grants),
                "open_requests": len(self.open_requests), "in_flight": len(self.in_flight),
                "tokens": len(self.tokens)}

    @property
    def has_access(self) -> bool:
        return bool(self.login_roles or self.grants)


@dataclass
class OffboardingResult:
    user_id: int
    username: str
    deactivated: bool  # False: the user was inactive already
    disable_requests: list[int] = field(default_factory=list)
    revoke_requests: list[int] = field(default_factory=list)
    cancelled_requests: list[int] = field(default_factory=list)
    in_flight_requests: list[int] = field(default_factory=list)
    tokens_revoked: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {"login_roles_disabled": len(self.disable_requests), "grants_revoked": len(self.revoke_requests),
                "requests_cancelled": len(self.cancelled_requests), "requests_in_flight": len(self.in_flight_requests),
                "tokens_revoked": self.tokens_revoked}


def _role_justification(role: ManagedRole, username: str) -> str:
    return f"offboarding of user {username}: login role {role.name} (#{role.pk})"


def _grant_justification(grant: Grant, username: str) -> str:
    return f"offboarding of user {username}: grant #{grant.pk}"


def _live_login_roles(user: Any):
    # A disable already filed for the same role on the same instance (by any offboarding) covers it.
    disabled = (ChangeRequest.objects.annotate(role_name=KT("payload__role"))
                .filter(type=RequestType.DISABLE, instance=OuterRef("instance"), role_name=OuterRef("name"),
                        status__in=_FILED_STATES))
    return (ManagedRole.objects.filter(request__requester=user, login=True, dropped_at__isnull=True)
            .exclude(Exists(disabled)).select_related("instance", "team").order_by("instance__name", "name"))


def _live_grants(user: Any):
    # Whether an offboarding revoke is already filed for each is _filed_grant_ids (by its justification).
    return (Grant.objects.filter(request__requester=user, revoked_at__isnull=True)
            .select_related("instance", "team", "request").order_by("instance__name", "database", "schema", "pk"))


def _filed_grant_ids(user: Any, grants: list[Grant]) -> set[int]:
    """Grants whose offboarding revoke is already on its way or applied (one query)."""
    if not grants:
        return set()
    by_text = {_grant_justification(g, user.username): g.pk for g in grants}
    filed = ChangeRequest.objects.filter(type=RequestType.REVOKE, requester__isnull=True,
                                         justification__in=list(by_text), status__in=_FILED_STATES)
    return {by_text[text] for text in filed.values_list("justification", flat=True)}


def preview(user: Any) -> OffboardingPreview:
    """What `offboard(user)` would revoke, cancel and end, read now (platform admins only: the
    page and API check the caller)."""
    grants = list(_live_grants(user))
    filed = _filed_grant_ids(user, grants)
    requests = list(ChangeRequest.objects.filter(requester=user, status__in=OPEN_STATUSES)
                    .select_related("instance", "team").order_by("pk"))
    return OffboardingPreview(
        user=user,
        login_roles=list(_live_login_roles(user)),
        grants=[g for g in grants if g.pk not in filed],
        open_requests=[r for r in requests if r.status == RequestStatus.SUBMITTED],
        in_flight=[r for r in requests if r.status != RequestStatus.SUBMITTED],
        tokens=list(ApiToken.objects.filter(user=user, revoked_at__isnull=True).order_by("pk")),
    )


def _check_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidPayload.field("reason", "say why the user is offboarded")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise InvalidPayload.field("reason", f"at most {MAX_REASON} characters")
    return reason


def _file_system_request(*, type: str, instance: Any, team: Any, payload: dict, justification: str,
                         filer: Any, reason: str, username: str) -> ChangeRequest:
    """A system request (no requester) approved by the offboarding rule and queued at once."""
    plan = plan_text(module_for(type).render(payload, secrets=None))
    request = ChangeRequest.objects.create(
        type=type, instance=instance, team=team, requester=None, filed_by=filer, justification=justification,
        payload=payload, plan=plan, plan_hash=plan_hash(plan), risk=Risk.LOW,
        risk_reasons=[f"system {type} of an offboarded user's access"], status=RequestStatus.APPROVED,
        approved_at=timezone.now(),
    )
    record("request.submitted", object_type="request", object_id=request.pk, instance=instance,
           database=payload.get("database") or "", request_id=request.pk, outcome=RequestStatus.APPROVED,
           details={"type": type, "team": team.name, "reason": "offboarding", "user": username,
                    "offboarding_reason": reason, "plan_hash": request.plan_hash, "plan": plan})
    enqueue_apply(request)  # approved → queued, request.queued, the outbox row
    return request


def offboard(user: Any, *, actor: Any, reason: str, actor_ip: str | None = None) -> OffboardingResult:
    """Deactivate `user` and take back every access the portal gave them (see the module doc).

    `actor`: the platform admin doing it, or None for the portal itself. Raises PolicyViolation
    (403) for anyone else or for oneself, InvalidPayload (400, field `reason`) without a reason."""
    if actor is not None and not is_admin(actor):
        raise PolicyViolation("only platform admins may offboard a user")
    if actor is not None and actor.pk == user.pk:
        raise PolicyViolation("you cannot offboard yourself")
    reason = _check_reason(reason)
    filer = actor if actor is not None else None
    with transaction.atomic(), audit_batched():
        locked = get_user_model().objects.select_for_update().get(pk=user.pk)
        username = locked.username
        result = OffboardingResult(user_id=locked.pk, username=username, deactivated=locked.is_active)
        if locked.is_active:
            locked.is_active = False
            locked.save(update_fields=["is_active"])
            record("user.deactivated", actor=actor, actor_ip=actor_ip, object_type="user", object_id=locked.pk,
                   outcome="deactivated", details={"username": username, "reason": reason})
        user.is_active = False
        # Serialise with a concurrent offboarding of the same user: the user row is locked above.
        for role in _live_login_roles(locked):
            request = _file_system_request(
                type=RequestType.DISABLE, instance=role.instance, team=role.team, payload={"role": role.name},
                justification=_role_justification(role, username), filer=filer, reason=reason, username=username)
            result.disable_requests.append(request.pk)
        grants = list(_live_grants(locked).select_for_update(of=("self",)))
        filed = _filed_grant_ids(locked, grants)
        for grant in grants:
            if grant.pk in filed:
                continue
            request = _file_system_request(
                type=RequestType.REVOKE, instance=grant.instance, team=grant.team, payload=revoke_payload_for(grant),
                justification=_grant_justification(grant, username), filer=filer, reason=reason, username=username)
            result.revoke_requests.append(request.pk)
        open_requests = list(ChangeRequest.objects.select_for_update(of=("self",)).select_related("instance")
                             .filter(requester=locked, status__in=OPEN_STATUSES).order_by("pk"))
        cancelled = [r for r in open_requests if r.status == RequestStatus.SUBMITTED]
        result.in_flight_requests = [r.pk for r in open_requests if r.status != RequestStatus.SUBMITTED]
        for request in cancelled:
            request.status = RequestStatus.CANCELLED
            request.status_detail = f"cancelled: the requester was offboarded ({reason})"[:4000]
            request.save(update_fields=["status", "status_detail", "updated_at"])
            database = request.payload.get("database", "") if isinstance(request.payload, dict) else ""
            record("request.cancelled", actor=actor, actor_ip=actor_ip, object_type="request", object_id=request.pk,
                   instance=request.instance, database=database or "", request_id=request.pk,
                   outcome=RequestStatus.CANCELLED, details={"reason": "offboarding", "user": username})
            result.cancelled_requests.append(request.pk)
        names_release(cancelled)
        now = timezone.now()
        tokens = list(ApiToken.objects.select_for_update().filter(user=locked, revoked_at__isnull=True))
        if tokens:
            ApiToken.objects.filter(pk__in=[t.pk for t in tokens]).update(
                revoked_at=now, revoked_by=filer)
        for token in tokens:
            record("token.revoked", actor=actor, actor_ip=actor_ip, object_type="api_token", object_id=token.pk,
                   outcome="revoked", details={"user": username, "name": token.name, "prefix": token.prefix,
                                               "reason": "offboarding"})
        result.tokens_revoked = len(tokens)
        record("user.offboarded", actor=actor, actor_ip=actor_ip, object_type="user", object_id=locked.pk,
               outcome="offboarded",
               details={"username": username, "reason": reason, **result.counts,
                        "disable_requests": result.disable_requests, "revoke_requests": result.revoke_requests,
                        "cancelled_requests": result.cancelled_requests,
                        "in_flight_requests": result.in_flight_requests})
        cancelled_ids = list(result.cancelled_requests)
        transaction.on_commit(lambda: [notify_enqueue(pk, "cancelled") for pk in cancelled_ids])
    return result


def offboard_sweep(*, limit: int = 100) -> list[int]:
    """The periodic check: every inactive user who still has a live login role or grant the portal
    gave them (a request that was in flight when they were offboarded, a retried one) is offboarded
    again by the portal. Returns the user ids it acted on."""
    users = get_user_model().objects.filter(is_active=False).filter(
        Q(change_requests__grants__revoked_at__isnull=True, change_requests__grants__isnull=False)
        | Q(change_requests__type=RequestType.ROLE, change_requests__status=RequestStatus.APPLIED,
            change_requests__payload__login=True)
    ).distinct().order_by("pk")[:limit]
    acted: list[int] = []
    for user in users:
        found = preview(user)
        if not found.has_access:
            continue
        offboard(user, actor=None, reason="periodic check: an inactive user still had access")
        acted.append(user.pk)
    return acted
