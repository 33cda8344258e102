"""The replica driver interface, the registry of drivers by instance kind, and the write guard.

A driver knows how to make, watch, promote and remove a streaming standby of one kind of
instance. Only `local` ships (provisioning/replicas/local.py, pg_basebackup on this host);
another backend (a Kubernetes operator, a cloud API) plugs in by subclassing ReplicaDriver
and decorating it with @register("<kind>") — see README "Read replicas: drivers".
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from psycopg import sql

from portal.errors import InvalidPayload

# Called after each step of a build: (step key, milliseconds it took, details for the audit event).
StepCallback = Callable[[str, float, dict[str, Any]], None]


@dataclass
class ReplicaState:
    """What a replica looks like right now, as the health job records it on the Instance."""

    status: str  # an InstanceStatus value: reachable (streaming) or unhealthy
    detail: str = ""
    # Bytes of WAL the standby has not replayed yet (primary's pg_stat_replication).
    lag_bytes: int | None = None
    # Seconds since the last replayed transaction when WAL is still pending; 0 when everything
    # received has been replayed (an idle primary is not "lagging").
    lag_seconds: float | None = None
    server_version: str = ""


class ReplicaDriver(abc.ABC):
    """One backend that can create standbys of a kind of instance."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def describe(self, *, name: str) -> list[tuple[str, sql.Composable]]:
        """The build's steps as (key, human-readable `-- step` line) in order: the reviewer's plan."""

    @abc.abstractmethod
    def create(self, *, primary: Any, name: str, key: str, actor: Any = None, request_id: int | None = None,
               on_step: StepCallback | None = None) -> Any:
        """Build the standby and register it as an Instance (returned). Safe to call again after a
        crash at any point: it finishes the job, reusing or cleaning up what an earlier try left."""

    @abc.abstractmethod
    def abandon(self, *, primary: Any, name: str, key: str, actor: Any = None, request_id: int | None = None) -> None:
        """Undo an unfinished build: no data, no process and no half-registered Instance remains."""

    @abc.abstractmethod
    def status(self, replica: Any) -> ReplicaState:
        """Probe the standby and its primary (no writes to the portal's database)."""

    @abc.abstractmethod
    def promote(self, replica: Any) -> None:
        """Make the standby a primary that accepts writes (idempotent)."""

    @abc.abstractmethod
    def destroy(self, replica: Any) -> None:
        """Stop the standby and remove its data (idempotent)."""


# Filled by @register as driver modules load; provisioning's AppConfig.ready() loads the built-in
# one (local.py), so this module imports no driver and a driver imports this module only.
_REGISTRY: dict[str, type[ReplicaDriver]] = {}


def register(kind: str) -> Callable[[type[ReplicaDriver]], type[ReplicaDriver]]:
    def decorate(cls: type[ReplicaDriver]) -> type[ReplicaDriver]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def supported_kinds() -> list[str]:
    return sorted(_REGISTRY)


def driver_for_kind(kind: str) -> ReplicaDriver | None:
    cls = _REGISTRY.get(kind)
    return cls() if cls else None


def driver_for(instance: Any) -> ReplicaDriver:
    """The driver for an instance's kind; ValueError when no driver supports that kind."""
    driver = driver_for_kind(instance.kind)
    if driver is None:
        raise ValueError(f"no replica driver for instances of kind {instance.kind!r}")
    return driver


def ensure_writable(instance: Any, field: str = "instance") -> None:
    """Refuse a write (schema, role, grant, revoke, ddl) aimed at a read replica: 400 naming `field`."""
    if instance is not None and getattr(instance, "replica_of_id", None) is not None:
        primary = instance.replica_of.name if instance.replica_of else "its primary"
        raise InvalidPayload.field(
            field, f"{instance.name} is a read-only replica of {primary}; send changes to {primary}"
        )
