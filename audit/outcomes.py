"""The outcome vocabulary: every word an audit event's `outcome` may hold, and whether it tells of
a success or a failure (PCI DSS v4 10.2.2: "success or failure indication").

An outcome names what happened in words a reader understands (`approved`, `revoked`, `expired`),
so there are more than two; each one is classified here once. `tests/audit/test_outcomes.py`
walks every call site and fails on a word that is not in this vocabulary, so a new outcome is
classified when it is introduced. Exports, the SIEM's severity and the log's badges read
`is_failure()`.
"""

from __future__ import annotations

# The attempted action did not happen, or happened wrongly (the reason is in details).
FAILURE = frozenset({
    "failed", "failure", "error", "broken", "denied", "refused", "locked", "worker_lost", "not_terminated",
    "lagging", "late", "overdue", "retrying",
})

# The action happened (a refusal *decided* by a reviewer, such as `rejected`, is a success of the
# reviewer's action; what the request then does is its own event).
SUCCESS = frozenset({
    "ok", "success", "verified", "stored", "unchanged", "changed", "added", "created", "registered", "deleted",
    "removed", "retired", "enabled", "disabled", "opened", "closed", "resolved", "recovered", "acknowledged",
    "reassigned", "escalated", "proposed", "sent", "delivered", "exported", "revealed", "revoked", "revoke_filed",
    "expired", "deactivated", "offboarded", "bypassed", "promoted", "terminated", "misuse", "caught_up",
    # request lifecycle (portal.choices.RequestStatus), decisions and engine outcomes
    "submitted", "approved", "rejected", "cancelled", "queued", "running", "applied", "approve", "reject",
    "already_applied", "skipped", "busy", "stale", "retried",
    # instance status (portal.choices.InstanceStatus) and drift kinds recorded as outcomes
    "reachable", "unreachable", "unhealthy", "unknown", "provisioning",
    "unexpected_privilege", "missing_privilege", "dangerous_attribute",
})

VOCABULARY = FAILURE | SUCCESS


def is_failure(outcome: str) -> bool:
    """Whether an outcome tells of a failure (an unknown word counts as one: never hide it)."""
    return outcome in FAILURE or outcome not in SUCCESS


def result_of(outcome: str) -> str:
    """`success` or `failure`, as exports and reports print it."""
    return "failure" if is_failure(outcome) else "success"
