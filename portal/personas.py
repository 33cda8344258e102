"""Persona checks: is this user a platform admin, a reviewer, an auditor (Django groups, cached per request),
and which teams they belong to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portal.choices import Persona


def _cached_on(user: Any, attribute: str, load: Callable[[], Any]) -> Any:
    """What load() returns, kept on the user object for the request's life."""
    cached = getattr(user, attribute, None)
    if cached is None:
        cached = load()
        setattr(user, attribute, cached)
    return cached


def user_groups(user: Any) -> set[str]:
    """Group names of a user, cached on the user object for the request's life."""
    if not getattr(user, "is_authenticated", False):
        return set()
    return _cached_on(user, "_portal_groups", lambda: set(user.groups.values_list("name", flat=True)))


def member_team_ids(user: Any) -> frozenset[int]:
    """Ids of the teams a user belongs to, cached on the user object for the request's life (the
    API's token statement fills it with the groups, portal/api/authentication.py)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    return _cached_on(user, "_portal_team_ids", lambda: frozenset(user.memberships.values_list("team_id", flat=True)))


def is_admin(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False)) or Persona.ADMINS.value in user_groups(user)


def is_reviewer(user: Any) -> bool:
    return is_admin(user) or Persona.REVIEWERS.value in user_groups(user)


def is_auditor(user: Any) -> bool:
    return is_admin(user) or Persona.AUDITORS.value in user_groups(user)


def sees_everything(user: Any) -> bool:
    """Reviewers, auditors and admins see every team's objects (read-only for auditors)."""
    groups = user_groups(user)
    return is_admin(user) or bool(groups & {Persona.REVIEWERS.value, Persona.AUDITORS.value})
