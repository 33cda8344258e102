"""Who may read the audit log (the entitlements' permission is portal.api.permissions.CanSeeEntitlements)."""

from portal.api.permissions import IsAuditorOrAdmin

__all__ = ["IsAuditorOrAdmin"]
