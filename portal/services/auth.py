"""Sign-in: authenticate, audit success and failure (never the password)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction

from audit.services import record
from portal.errors import PolicyViolation


class LocalLoginOff(PolicyViolation):
    """PORTAL_LOCAL_LOGIN=off: passwords are refused on the page and the API (docs/identity.md)."""

    default_detail = "password sign-in is switched off on this portal: sign in through single sign-on"


def client_ip(request: Any) -> str | None:
    """The caller's address. X-Forwarded-For is trusted only when PORTAL_TRUST_PROXY is set."""
    if settings.TRUST_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR") or None


def login_attempt(*, request: Any, username: str, password: str, channel: str) -> Any:
    """Authenticate a user; record auth.login or auth.login_failed. Returns the user or None.
    Raises LocalLoginOff (recorded as a refused sign-in) when password sign-in is switched off."""
    if not settings.LOCAL_LOGIN:
        getattr(request, "_request", request).refusal_audited = True
        with transaction.atomic():
            record("auth.login_failed", actor=username[:150] or "anonymous", actor_ip=client_ip(request),
                   object_type="user", outcome="refused",
                   details={"channel": channel, "reason": "local sign-in is switched off"})
        raise LocalLoginOff()
    user = authenticate(request, username=username, password=password)
    if user is None:
        # This refusal is audited here (login_failed / locked_out): not again as access.denied.
        getattr(request, "_request", request).refusal_audited = True
    with transaction.atomic():
        if user is None and getattr(request, "axes_locked_out", False):
            # django-axes refused it: the name is locked out from this address (this failure locked
            # it, or an earlier one did). Its own event, not one more failed sign-in (PCI DSS 10.2.1.4).
            record("auth.locked_out", actor=username[:150] or "anonymous", actor_ip=client_ip(request),
                   object_type="user", outcome="locked",
                   details={"channel": channel, "failures_allowed": settings.AXES_FAILURE_LIMIT})
        elif user is None:
            record("auth.login_failed", actor=username[:150] or "anonymous", actor_ip=client_ip(request),
                   object_type="user", outcome="failed", details={"channel": channel})
        else:
            record("auth.login", actor=user, actor_ip=client_ip(request), object_type="user", object_id=user.pk,
                   outcome="ok", details={"channel": channel})
    return user


def logout_record(*, request: Any) -> None:
    """Audit a sign-out (auth.logout) before the session ends; an anonymous sign-out writes nothing."""
    user = request.user
    if getattr(user, "is_authenticated", False):
        record("auth.logout", actor=user, actor_ip=client_ip(request), object_type="user", object_id=user.pk,
               outcome="ok", details={"channel": "web"})


def access_denied_record(*, request: Any, status: int) -> None:
    """Audit an invalid access attempt (PCI DSS 10.2.1.4): a 401 or 403 on any route, with who
    (the user, or the anonymous caller), from where, which route and how it was refused."""
    user = getattr(request, "user", None)
    actor = user if getattr(user, "is_authenticated", False) else "anonymous"
    with transaction.atomic():
        record("access.denied", actor=actor, actor_ip=client_ip(request), object_type="route",
               object_id=request.path[:200], outcome="denied",
               details={"method": request.method, "status": status})
