"""Reads of API tokens and of users for the offboarding pages: who sees what is ApiToken.objects.restrict()
(a user: their own tokens; a platform admin: everyone's)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone

from portal.models import ApiToken

TOKEN_COLUMNS = ("id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at", "user__username")


def token_list_for(viewer: Any, *, username: str | None = None) -> QuerySet[ApiToken]:
    """The tokens `viewer` may see, newest first; `username` narrows an admin's view to one person."""
    tokens = ApiToken.objects.restrict(viewer).select_related("user").only(*TOKEN_COLUMNS)
    if username:
        tokens = tokens.filter(user__username=username)
    return tokens.order_by("-id")


def token_status(token: ApiToken, now=None) -> str:
    """active | expired | revoked, as lists show it."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= (now or timezone.now()):
        return "expired"
    return "active"


def user_list_for_admin() -> QuerySet:
    """Every user, for the platform admin's users page (the caller checks the persona)."""
    return get_user_model().objects.order_by("username").only("id", "username", "email", "is_active", "last_login")
