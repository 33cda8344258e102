"""Every enumeration of the domain, in one place."""

from django.db import models


class Environment(models.TextChoices):
    DEV = "dev", "dev"
    STAGING = "staging", "staging"
    PROD = "prod", "production"


class InstanceKind(models.TextChoices):
    EXTERNAL = "external", "external"
    LOCAL = "local", "local"


class InstanceStatus(models.TextChoices):
    UNKNOWN = "unknown", "unknown"
    REACHABLE = "reachable", "reachable"
    UNREACHABLE = "unreachable", "unreachable"
    PROVISIONING = "provisioning", "provisioning"
    UNHEALTHY = "unhealthy", "unhealthy"
    RETIRED = "retired", "retired"


class MembershipRole(models.TextChoices):
    MEMBER = "member", "member"
    LEAD = "lead", "lead"


class RequestType(models.TextChoices):
    SCHEMA = "schema", "schema"
    ROLE = "role", "role"
    GRANT = "grant", "grant"
    REVOKE = "revoke", "revoke"
    DDL = "ddl", "schema change (DDL)"
    REPLICA = "replica", "read replica"
    # Filed by the portal only: the removal of a role left with nothing (provisioning/verification.py).
    DROP_ROLE = "drop_role", "remove an unused role"
    # Filed by the portal only, when it offboards the user who asked for a login role (NOLOGIN).
    DISABLE = "disable", "disable a login role"
    # End one session (a blocking one seen on the monitoring page, #21), reviewed.
    TERMINATE = "terminate", "end a session"
    # Database D of a local instance as it was at time T, into a new local instance (#20, docs/backups.md).
    RESTORE = "restore", "point-in-time restore"


class RequestStatus(models.TextChoices):
    SUBMITTED = "submitted", "submitted"
    APPROVED = "approved", "approved"
    REJECTED = "rejected", "rejected"
    CANCELLED = "cancelled", "cancelled"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    APPLIED = "applied", "applied"
    FAILED = "failed", "failed"


# Requests that still claim the role and schema names they will create (NameReservation). `queued`
# includes a request waiting for the engine's automatic retry after a transient error. A `failed`
# request has ended: its names are released, and a reviewer's retry claims them again (a 409 if
# another request took them meanwhile), so a failure nobody retries never blocks a name.
OPEN_STATUSES = (RequestStatus.SUBMITTED, RequestStatus.APPROVED, RequestStatus.QUEUED, RequestStatus.RUNNING)


class NameKind(models.TextChoices):
    """What a NameReservation claims: roles are cluster-wide, schemas per database."""

    ROLE = "role", "role"
    SCHEMA = "schema", "schema"


class Risk(models.TextChoices):
    LOW = "low", "low"
    MEDIUM = "medium", "medium"
    HIGH = "high", "high"


RISK_ORDER = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2}


class Decision(models.TextChoices):
    APPROVE = "approve", "approve"
    REJECT = "reject", "reject"


class Persona(models.TextChoices):
    """Django group names; a user's persona is the groups they are in."""

    REQUESTERS = "requesters", "developer"
    REVIEWERS = "reviewers", "security reviewer"
    AUDITORS = "auditors", "auditor"
    ADMINS = "platform-admins", "platform admin"


class DriftKind(models.TextChoices):
    UNEXPECTED = "unexpected_privilege", "unexpected privilege"
    MISSING = "missing_privilege", "missing privilege"
    DANGEROUS = "dangerous_attribute", "dangerous attribute"


class DriftStatus(models.TextChoices):
    OPEN = "open", "open"
    ACKNOWLEDGED = "acknowledged", "acknowledged"
    RESOLVED = "resolved", "resolved"


PRIVILEGES = ["USAGE", "CREATE", "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
SCHEMA_PRIVILEGES = {"USAGE", "CREATE"}
TABLE_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
# What a break-glass grant may give: reading and changing data, never DDL (CREATE, TRIGGER,
# REFERENCES) nor TRUNCATE, which bypasses row-level triggers and cannot be narrowed.
BREAK_GLASS_PRIVILEGES = ["USAGE", "SELECT", "INSERT", "UPDATE", "DELETE"]


class BreakGlassOutcome(models.TextChoices):
    """How a reviewer closed the post-hoc review of a break-glass request."""

    ACKNOWLEDGED = "acknowledged", "acknowledged"
    MISUSE = "misuse", "flagged as misuse"


# Access reviews (issue #18): periodic recertification campaigns. "Review" elsewhere in the
# portal means approving a request; these are "access reviews".
class CampaignStatus(models.TextChoices):
    OPEN = "open", "open"
    CLOSED = "closed", "closed"


class UnansweredAction(models.TextChoices):
    """What the deadline does to an item nobody decided."""

    REVOKE = "revoke", "revoke"
    ESCALATE = "escalate", "escalate to the certifier's lead"


class CertificationDecision(models.TextChoices):
    KEEP = "keep", "keep"
    REVOKE = "revoke", "revoke"
    SHORTEN = "shorten", "shorten (set an expiry)"
