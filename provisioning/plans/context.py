"""PlanContext: everything a plan may know about the world, read before the plan runs.

Plans are pure: validate() and render() look only at the payload and this context, never at the
ORM, a connection or the caller's permissions. The portal builds a context with
portal.selectors.plan_context.plan_context_for (one read per kind of fact, as few queries as a
validation needed before); tests build one by hand, with no database at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The caller's persona as far as plans care: a system request (expiry, drift) or a reviewer may
# take back any access; a requester only what their team holds or gives.
SYSTEM = "system"
REVIEWER = "reviewer"
REQUESTER = "requester"
PERSONAS = frozenset({SYSTEM, REVIEWER, REQUESTER})


@dataclass(frozen=True)
class InstanceFacts:
    """The attributes of the target instance that plans read."""

    name: str
    environment: str = "dev"
    kind: str = "external"
    status: str = "active"
    # Not None: the instance is a read replica of this primary ("" when the primary is unknown).
    replica_of: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class ManagedRoleFact:
    """A role the portal created on the instance (portal.models.ManagedRole)."""

    name: str
    team_id: int | None
    login: bool = False
    dropped: bool = False
    request_id: int | None = None


@dataclass(frozen=True)
class ManagedSchemaFact:
    """A schema the portal created on the instance (portal.models.ManagedSchema)."""

    database: str
    name: str
    owner_role: str
    team_id: int | None


@dataclass(frozen=True)
class Lookups:
    """The names a validation looks up (a plan's `lookups` hook): roles, schemas (in each of the
    databases) and databases, in the portal's records and the inventory snapshot alike."""

    roles: frozenset[str] = frozenset()
    schemas: frozenset[str] = frozenset()
    databases: frozenset[str] = frozenset()


def names_in(*values: Any) -> frozenset[str]:
    """The values that can be names to look up: text PostgreSQL can hold (no NUL, no unpaired
    surrogate). Anything else never passes validation's own checks, so it is never looked up."""
    names = set()
    for value in values:
        if isinstance(value, str) and value and "\x00" not in value:
            try:
                value.encode()
            except UnicodeEncodeError:
                continue
            names.add(value)
    return frozenset(names)


@dataclass(frozen=True)
class PlanContext:
    """What validate() and render() may consult besides the payload.

    `inventory` is the instance's inventory snapshot, None when the workers never read it (write
    plans then refuse to validate blindly). `roles` and `schemas` are the portal's records on the
    instance; `instance_names` every instance's name (replica requests name a new one);
    `enabled_ddl_rules` the review rules on in the instance's environment (None: all of them).
    """

    instance: InstanceFacts
    team_id: int | None = None
    team_name: str | None = None
    persona: str = SYSTEM
    inventory: dict | None = None
    roles: dict[str, ManagedRoleFact] = field(default_factory=dict)
    schemas: dict[tuple[str, str], ManagedSchemaFact] = field(default_factory=dict)
    instance_names: frozenset[str] = frozenset()
    enabled_ddl_rules: frozenset[str] | None = None
    # Not None: `roles`, `schemas` and the inventory hold only these names (plan_context_for read
    # what the plan's lookups hook named); a lookup of any other name is a bug, never "absent".
    only: Lookups | None = None

    def __post_init__(self) -> None:
        if self.persona not in PERSONAS:
            raise ValueError(f"unknown persona {self.persona!r}")

    @property
    def team(self) -> str:
        """The requesting team as messages name it."""
        return str(self.team_name)

    def role(self, name: str, *, include_dropped: bool = False) -> ManagedRoleFact | None:
        """The portal's record of role `name` on the instance (dropped ones only when asked)."""
        if self.only is not None and name not in self.only.roles:
            raise LookupError(f"role {name!r} was not read into this context (see the plan's lookups)")
        role = self.roles.get(name)
        if role is None or (role.dropped and not include_dropped):
            return None
        return role

    def schema(self, database: str, name: str) -> ManagedSchemaFact | None:
        if self.only is not None and (database not in self.only.databases or name not in self.only.schemas):
            raise LookupError(f"schema {database}.{name} was not read into this context (see the plan's lookups)")
        return self.schemas.get((database, name))

    def team_group_roles(self) -> dict[str, ManagedRoleFact]:
        """The requesting team's live NOLOGIN group roles, by name."""
        if self.only is not None:
            raise LookupError("this context holds only the roles the payload names")
        return {name: role for name, role in self.roles.items()
                if role.team_id == self.team_id and not role.login and not role.dropped}


def facts_of_instance(instance: Any) -> InstanceFacts:
    """InstanceFacts of a portal.models.Instance (reads instance.replica_of only for a replica)."""
    replica_of = None
    if getattr(instance, "replica_of_id", None) is not None:
        replica_of = instance.replica_of.name if instance.replica_of else ""
    return InstanceFacts(name=instance.name, environment=instance.environment, kind=instance.kind,
                         status=instance.status, replica_of=replica_of, id=instance.pk)
