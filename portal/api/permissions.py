"""API permission classes by persona; object scope is done by restrict() (404, not 403)."""

from rest_framework.permissions import BasePermission

from portal.querysets import is_admin, is_auditor


class IsPlatformAdmin(BasePermission):
    message = "platform admins only"

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_admin(request.user))


class IsAuditorOrAdmin(BasePermission):
    message = "auditors and platform admins only"

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_auditor(request.user))
