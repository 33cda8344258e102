"""Whether an applied revoke (or offboarding disable) was verified on the catalog: the worker's
`grant.revocation_verified` event (provisioning/verification.py), read back for the request page
and the API. Only requests of the kinds that are verified cost a query."""

from __future__ import annotations

from audit.models import AuditEvent
from portal.choices import RequestStatus, RequestType
from portal.models import ChangeRequest

VERIFIED_TYPES = {RequestType.REVOKE.value, "disable"}


def revocation_verification_of(request: ChangeRequest) -> dict | None:
    """{outcome, checked_at, reason, remaining, drift_findings} of the latest check, {"outcome":
    "pending"} while the worker has not checked yet, None for a request that is not verified."""
    if request.type not in VERIFIED_TYPES or request.status != RequestStatus.APPLIED:
        return None
    event = (AuditEvent.objects.filter(request_id=request.pk, action="grant.revocation_verified")
             .order_by("-ts").values("outcome", "ts", "details").first())
    if event is None:
        return {"outcome": "pending", "checked_at": None, "reason": "", "remaining": [], "drift_findings": []}
    details = event["details"] or {}
    return {"outcome": event["outcome"], "checked_at": event["ts"], "reason": details.get("reason", ""),
            "remaining": details.get("remaining", []), "drift_findings": details.get("drift_findings", [])}
