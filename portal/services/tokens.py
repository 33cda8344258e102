"""API tokens: create (shown once), revoke, and the one `POST /api/v1/auth/token/` issues.

Who may do what:
- any signed-in user creates, lists and revokes their own tokens (page /tokens/, API /api/v1/tokens/);
- a platform admin also lists and revokes anyone's tokens (never creates one for someone else:
  a token is a person's own credential, and its secret is shown once, to its owner);
- nobody reads a token's secret after creation: only its SHA-256 digest is stored.

Each use is checked against the user's current state by portal/api/authentication.py: a revoked
or expired token, an inactive (offboarded) user or a user left with no persona is refused at once.
Expiry: `PORTAL_API_TOKEN_DAYS` (default 30) when none is asked for, at most
`PORTAL_API_TOKEN_MAX_DAYS` (default 365).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from portal.errors import Conflict, InvalidPayload, PolicyViolation
from portal.models import ApiToken
from portal.personas import is_admin

TOKEN_PREFIX = "dbp_"
PREFIX_LENGTH = 12  # "dbp_" and 8 characters of the secret: enough to tell tokens apart, useless to guess
MAX_NAME = 100
# POST /api/v1/auth/token/ makes a new token each call (the old ones cannot be shown again): at most
# this many of them stay active per user; beyond, the oldest issued there is revoked.
AUTH_ENDPOINT_NAME = "auth/token"
AUTH_ENDPOINT_KEEP = 20


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def default_days() -> int:
    return int(settings.API_TOKEN_DAYS)


def max_days() -> int:
    return int(settings.API_TOKEN_MAX_DAYS)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidPayload.field("name", "give the token a name")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise InvalidPayload.field("name", f"at most {MAX_NAME} characters")
    if any(not ch.isprintable() for ch in name):
        raise InvalidPayload.field("name", "letters, digits, spaces and punctuation only")
    return name


def _check_days(days: Any) -> int:
    if days is None or days == "":
        return min(default_days(), max_days())
    if isinstance(days, bool) or not isinstance(days, int):
        try:
            days = int(str(days))
        except ValueError:
            raise InvalidPayload.field("expires_in_days", "a whole number of days") from None
    if not 1 <= days <= max_days():
        raise InvalidPayload.field("expires_in_days", f"from 1 to {max_days()} days")
    return days


def _new(user: Any, name: str, days: int) -> tuple[ApiToken, str]:
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=key[:PREFIX_LENGTH], digest=token_digest(key),
                                    expires_at=timezone.now() + timedelta(days=days))
    return token, key


def token_create(*, user: Any, name: Any, expires_in_days: Any = None, actor_ip: str | None = None
                 ) -> tuple[ApiToken, str]:
    """A new token of `user` (for themselves): (the row, the token text to show once)."""
    name = _check_name(name)
    days = _check_days(expires_in_days)
    try:
        with transaction.atomic():
            token, key = _new(user, name, days)
            record("token.created", actor=user, actor_ip=actor_ip, object_type="api_token", object_id=token.pk,
                   outcome="ok", details={"name": name, "prefix": token.prefix, "user": user.username,
                                          "expires_at": token.expires_at.isoformat(), "channel": "tokens"})
    except IntegrityError:
        raise Conflict("you already have an active token of that name",
                       errors={"name": ["you already have an active token of that name"]}) from None
    return token, key


def token_issue_for_login(*, user: Any, actor_ip: str | None = None) -> tuple[ApiToken, str]:
    """The token `POST /api/v1/auth/token/` answers with (the user just signed in with their
    password, and MFA where it applies): a named one of the new kind, default expiry."""
    with transaction.atomic():
        stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
        token, key = _new(user, f"{AUTH_ENDPOINT_NAME} {stamp} {secrets.token_hex(2)}", min(default_days(), max_days()))
        record("token.created", actor=user, actor_ip=actor_ip, object_type="api_token", object_id=token.pk,
               outcome="ok", details={"name": token.name, "prefix": token.prefix, "user": user.username,
                                      "expires_at": token.expires_at.isoformat(), "channel": "auth_endpoint"})
        surplus = list(ApiToken.objects.filter(user=user, revoked_at__isnull=True,
                                               name__startswith=AUTH_ENDPOINT_NAME + " ")
                       .order_by("-id").values_list("pk", "name", "prefix")[AUTH_ENDPOINT_KEEP:])
        if surplus:
            ApiToken.objects.filter(pk__in=[pk for pk, _, _ in surplus]).update(revoked_at=timezone.now())
            for pk, name, prefix in surplus:
                record("token.revoked", actor=None, actor_ip=actor_ip, object_type="api_token", object_id=pk,
                       outcome="revoked", details={"name": name, "prefix": prefix, "user": user.username,
                                                   "reason": f"more than {AUTH_ENDPOINT_KEEP} tokens from auth/token"})
    return token, key


def token_revoke(*, token: ApiToken, actor: Any, actor_ip: str | None = None) -> ApiToken:
    """Revoke a token: its owner, or a platform admin. A revoked token stays listed, marked."""
    if token.user_id != actor.pk and not is_admin(actor):
        raise PolicyViolation("only the token's owner or a platform admin may revoke it")
    with transaction.atomic():
        locked = ApiToken.objects.select_for_update().select_related("user").get(pk=token.pk)
        if locked.revoked_at is not None:
            raise Conflict("the token is already revoked")
        locked.revoked_at = timezone.now()
        locked.revoked_by = actor
        locked.save(update_fields=["revoked_at", "revoked_by"])
        record("token.revoked", actor=actor, actor_ip=actor_ip, object_type="api_token", object_id=locked.pk,
               outcome="revoked", details={"name": locked.name, "prefix": locked.prefix,
                                           "user": locked.user.username, "reason": "revoked"})
    return locked
