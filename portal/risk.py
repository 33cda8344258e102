"""Risk rules: rate a request's plan low / medium / high from its content and the environment.

The rules are a table (`RULES`): each names the level it raises the request to and the reason a
reviewer reads. A request's risk is the highest level of the rules that match; every matching
reason is kept, so a reviewer sees why. docs/risk.md shows the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portal.choices import RISK_ORDER, Environment, RequestType, Risk
from portal.models import ManagedSchema
from provisioning.ddl.rules import ddl_risk

WRITE_PRIVILEGES = {"INSERT", "UPDATE"}
DESTRUCTIVE_PRIVILEGES = {"DELETE", "TRUNCATE"}
SIDE_EFFECT_PRIVILEGES = {"REFERENCES", "TRIGGER"}


@dataclass(frozen=True)
class Subject:
    """What the rules look at: the request's type, validated payload, instance and teams."""

    type: str
    payload: dict
    environment: str
    team_id: int | None
    owner_team_id: int | None  # team owning the schema of a grant / revoke (None: not managed)

    @property
    def privileges(self) -> set[str]:
        return set(self.payload.get("privileges") or [])

    @property
    def is_access(self) -> bool:
        return self.type == RequestType.GRANT

    @property
    def cross_team(self) -> bool:
        return self.owner_team_id is not None and self.owner_team_id != self.team_id


@dataclass(frozen=True)
class Rule:
    level: str
    reason: str
    applies: Callable[[Subject], bool]


def _privs(subject: Subject, wanted: set[str]) -> bool:
    return subject.is_access and bool(subject.privileges & wanted)


RULES: list[Rule] = [
    Rule(Risk.HIGH, "production instance: every change there is high risk",
         lambda s: s.environment == Environment.PROD),
    Rule(Risk.HIGH, "CREATE on a schema: the role may create objects in it",
         lambda s: _privs(s, {"CREATE"})),
    Rule(Risk.HIGH, "write access to another team's schema",
         lambda s: s.cross_team and _privs(s, WRITE_PRIVILEGES | DESTRUCTIVE_PRIVILEGES | SIDE_EFFECT_PRIVILEGES)),
    Rule(Risk.MEDIUM, "write access (INSERT / UPDATE)", lambda s: _privs(s, WRITE_PRIVILEGES)),
    Rule(Risk.MEDIUM, "DELETE / TRUNCATE: rows may be removed", lambda s: _privs(s, DESTRUCTIVE_PRIVILEGES)),
    Rule(Risk.MEDIUM, "REFERENCES / TRIGGER: effects beyond reading",
         lambda s: _privs(s, SIDE_EFFECT_PRIVILEGES)),
    Rule(Risk.MEDIUM, "default privileges: tables created later are covered too",
         lambda s: s.is_access and bool(s.payload.get("default_privileges"))),
    Rule(Risk.MEDIUM, "login role: a password is generated and someone will connect with it",
         lambda s: s.type == RequestType.ROLE and bool(s.payload.get("login"))),
    Rule(Risk.MEDIUM, "read replica: a full copy of every database of the primary, on a new port, "
                      "readable by every role of the primary",
         lambda s: s.type == RequestType.REPLICA),
    Rule(Risk.HIGH, "point-in-time restore: a copy of a database as it was, with the source's roles and "
                    "passwords of that time, on a new instance",
         lambda s: s.type == RequestType.RESTORE),
    Rule(Risk.MEDIUM, "no risk rules for this request type yet: rated medium",
         lambda s: s.type not in {RequestType.SCHEMA, RequestType.ROLE, RequestType.GRANT, RequestType.REVOKE,
                                  RequestType.DDL, RequestType.REPLICA, RequestType.RESTORE}),
    # Low-level reasons do not raise the risk; they tell the reviewer what to look at.
    Rule(Risk.LOW, "access to another team's schema: its lead approves too", lambda s: s.cross_team),
    Rule(Risk.LOW, "read access", lambda s: s.is_access and bool(s.privileges & {"SELECT", "USAGE"})),
    Rule(Risk.LOW, "time-bound access: revoked automatically when it expires",
         lambda s: s.is_access and bool(s.payload.get("expires_at"))),
    Rule(Risk.LOW, "takes access away: a running application may lose it",
         lambda s: s.type == RequestType.REVOKE),
    Rule(Risk.LOW, "new empty schema owned by a group role", lambda s: s.type == RequestType.SCHEMA),
    Rule(Risk.LOW, "group role without login", lambda s: s.type == RequestType.ROLE and not s.payload.get("login")),
]


def risk_assess(*, request_type: str, payload: dict, environment: str, team_id: int | None,
                owner_team_id: int | None, findings: list | None = None) -> tuple[str, list[str]]:
    """(risk, reasons): the highest matching level; reasons from high to low.

    DDL requests are rated by their review-rule findings (provisioning/ddl/rules.py ddl_risk)
    on top of the rules above (a production instance stays high).
    """
    subject = Subject(type=request_type, payload=payload, environment=environment, team_id=team_id,
                      owner_team_id=owner_team_id)
    matched = [rule for rule in RULES if rule.applies(subject)]
    level = max((rule.level for rule in matched), key=lambda lvl: RISK_ORDER[lvl], default=Risk.LOW)
    reasons = [rule.reason for rule in matched]
    if request_type == RequestType.DDL:
        ddl_level, ddl_reasons = ddl_risk(findings or [])
        level = max(level, Risk(ddl_level), key=lambda lvl: RISK_ORDER[lvl])
        reasons = reasons + ddl_reasons
    return str(level), reasons


def owner_team_id_for(*, request_type: str, payload: dict, instance: Any) -> int | None:
    """The team owning the schema a grant / revoke touches (None when the portal does not manage it)."""
    if request_type not in (RequestType.GRANT, RequestType.REVOKE):
        return None
    return (ManagedSchema.objects.filter(instance=instance, database=payload.get("database"),
                                         name=payload.get("schema")).values_list("team_id", flat=True).first())
