"""RestrictedQuerySet.restrict(user, action): the one place that says what a user may see.

Objects outside a user's scope are filtered out, so a detail lookup answers 404 and never
confirms that the object exists.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from portal.choices import Persona

VIEW = "view"
CHANGE = "change"


def user_groups(user: Any) -> set[str]:
    """Group names of a user, cached on the user object for the request's life."""
    if not getattr(user, "is_authenticated", False):
        return set()
    cached = getattr(user, "_portal_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._portal_groups = cached
    return cached


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


class RestrictedQuerySet(models.QuerySet):
    """Each model names how its rows belong to a team (`team_path`) or are public (`public`)."""

    def restrict(self, user: Any, action: str = VIEW) -> RestrictedQuerySet:
        if not getattr(user, "is_authenticated", False):
            return self.none()
        model = self.model
        if action == VIEW and sees_everything(user):
            return self
        if action != VIEW and is_admin(user):
            return self
        policy = getattr(model, "restrict_policy", None)
        if policy is not None:
            return policy(self, user, action)
        team_path = getattr(model, "team_path", None)
        if team_path is None:
            return self.none()
        if action == VIEW:
            return self.filter(**{f"{team_path}__memberships__user": user}).distinct()
        return self.none()
