"""Domain errors. One API exception handler and one form mixin turn them into 4xx answers."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400
    default_detail = "invalid request"

    def __init__(self, detail: str | None = None, *, errors: dict[str, list[str]] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.errors = errors or {}
        super().__init__(self.detail)


class InvalidPayload(DomainError):
    """Bad input, with messages by field name (dotted for nested payload fields)."""

    status_code = 400
    default_detail = "invalid input"

    @classmethod
    def field(cls, name: str, message: str) -> InvalidPayload:
        return cls(f"{name}: {message}", errors={name: [message]})


class PolicyViolation(DomainError):
    """The caller may see the object but may not do this to it."""

    status_code = 403
    default_detail = "not allowed"


class Conflict(DomainError):
    """The object is not in a state that allows this (e.g. approving a cancelled request)."""

    status_code = 409
    default_detail = "conflict with the current state"


class NameConflict(Conflict):
    """A role or schema name is claimed by another open request on the instance (NameReservation).
    `errors` names the payload field; `holder_id` is the request holding the name."""

    default_detail = "the name is claimed by another open request"

    def __init__(self, detail: str | None = None, *, errors: dict[str, list[str]] | None = None,
                 holder_id: int | None = None) -> None:
        super().__init__(detail, errors=errors)
        self.holder_id = holder_id


class StalePlan(Conflict):
    default_detail = "the plan changed since it was reviewed"


class Gone(DomainError):
    status_code = 410
    default_detail = "no longer available"


class TargetUnavailable(DomainError):
    """A managed cluster could not be reached or refused us (shown as a 400 at registration)."""

    status_code = 400
    default_detail = "the instance could not be reached"
