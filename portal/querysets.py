"""RestrictedQuerySet.restrict(user, action): the one place that says what a user may see.

Objects outside a user's scope are filtered out, so a detail lookup answers 404 and never
confirms that the object exists. Who is an admin, a reviewer or an auditor is portal/personas.py.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from portal.personas import is_admin, sees_everything

VIEW = "view"
CHANGE = "change"


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
