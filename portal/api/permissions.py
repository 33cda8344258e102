"""API permission classes by persona; object scope is done by restrict() (404, not 403)."""

from rest_framework.permissions import BasePermission

from portal.personas import is_admin, is_auditor, is_reviewer


class IsPlatformAdmin(BasePermission):
    message = "platform admins only"

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_admin(request.user))


class IsAuditorOrAdmin(BasePermission):
    message = "auditors and platform admins only"

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_auditor(request.user))


class CanSeeEntitlements(BasePermission):
    """Auditors, platform admins and security reviewers (who act on unexplained privileges)."""

    message = "auditors, reviewers and platform admins only"

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (is_auditor(user) or is_reviewer(user)))
