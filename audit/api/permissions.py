"""Who may read the audit log and the entitlements."""

from rest_framework.permissions import BasePermission

from portal.api.permissions import IsAuditorOrAdmin
from portal.querysets import is_auditor, is_reviewer

__all__ = ["CanSeeEntitlements", "IsAuditorOrAdmin"]


class CanSeeEntitlements(BasePermission):
    """Auditors, platform admins and security reviewers (who act on unexplained privileges)."""

    message = "auditors, reviewers and platform admins only"

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (is_auditor(user) or is_reviewer(user)))
