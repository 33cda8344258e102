"""Errors of the provisioning engine, by kind: retry later, or fail the request now."""

from __future__ import annotations


class TargetError(Exception):
    """A plan could not be applied on the target cluster."""

    def __init__(self, message: str, *, sqlstate: str = "", statement: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        # The secret-free text of the statement that failed, when one did.
        self.statement = statement


class TransientTargetError(TargetError):
    """Worth retrying with backoff: connection lost, admin shutdown, lock timeout, serialization
    failure, deadlock, "tuple concurrently updated". Also raised by the replica runner."""


class PermanentTargetError(TargetError):
    """Retrying cannot help: syntax, permission, undefined object, stale plan, cluster changed."""
