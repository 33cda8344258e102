"""Plan of a `restore` request (issue #20): payload {database, target_time, name} → the steps the
reviewer reads. Restore database D of local instance I as it was at time T into a new local
instance N.

Nothing here runs as SQL: the engine hands approved restore requests to
provisioning/backups/restore.py, which performs these steps (the newest verified physical backup
that ended before T, WAL replayed up to T, the other databases dropped, N registered). The lines
are built only from sql.Identifier / sql.Literal so that no value can smuggle text into what the
reviewer sees.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import sql

from portal.errors import InvalidPayload
from provisioning.naming import name_problem
from provisioning.plans import Step
from provisioning.plans.context import PlanContext

HOOKS: frozenset[str] = frozenset()
ALLOWED_KEYS = {"database", "target_time", "name"}


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidPayload.field("payload.target_time", "required: an ISO 8601 time with its offset")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidPayload.field("payload.target_time", "not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise InvalidPayload.field("payload.target_time", "needs an offset (e.g. +00:00)")
    if parsed > datetime.now(UTC):
        raise InvalidPayload.field("payload.target_time", "must not be in the future")
    return parsed.astimezone(UTC)


def validate(payload: dict, ctx: PlanContext) -> dict:
    if not isinstance(payload, dict):
        raise InvalidPayload.field("payload", "must be an object with database, target_time and name")
    unknown = sorted(set(payload) - ALLOWED_KEYS)
    if unknown:
        raise InvalidPayload.field(f"payload.{unknown[0]}", "unknown field; a restore takes database, target_time, name")
    database = payload.get("database")
    if not isinstance(database, str) or not database or len(database.encode()) > 63 or "\x00" in database:
        raise InvalidPayload.field("payload.database", "required: the database to restore (1 to 63 bytes)")
    target = _parse_time(payload.get("target_time"))
    name = payload.get("name")
    problem = name_problem(name)
    if problem:
        raise InvalidPayload.field("payload.name", problem)
    instance = ctx.instance
    if instance.kind != "local":
        raise InvalidPayload.field("instance", "point-in-time restore needs physical backups: local instances only")
    if instance.replica_of is not None:
        raise InvalidPayload.field("instance", f"{instance.name} is a replica; restore from its primary")
    if instance.status == "retired":
        raise InvalidPayload.field("instance", f"{instance.name} is retired")
    if name in ctx.instance_names:
        raise InvalidPayload.field("payload.name", "an instance with this name exists")
    return {"database": database, "target_time": target.isoformat(), "name": name}


def describe(payload: dict) -> list[tuple[str, sql.Composable]]:
    """The steps; the source is the request's instance (rendered without a context at apply time)."""
    database, name = sql.Identifier(payload["database"]), sql.Identifier(payload["name"])
    target = sql.Literal(payload["target_time"])
    return [
        ("backup", sql.SQL("-- the newest verified physical backup of this instance that ended before {target} "
                           "(pg_verifybackup again)").format(target=target)),
        ("recover", sql.SQL("-- copy it to a new data directory, replay the WAL archive up to "
                            "recovery_target_time = {target}, promote").format(target=target)),
        ("start", sql.SQL("-- start {name} on a free port of 127.0.0.1; archiving off").format(name=name)),
        ("prune", sql.SQL("-- check {database} exists as of the target; DROP DATABASE every other user database "
                          "(WITH (FORCE))").format(database=database)),
        ("register", sql.SQL("-- register instance {name} (local, this instance's environment, the same roles "
                             "and passwords as this instance had at the target)").format(name=name)),
    ]


def render(payload: dict, ctx: PlanContext | None = None, *, secrets: dict | None = None) -> list[Step]:
    return [Step(statement=line, transactional=False) for _key, line in describe(payload)]


def database(payload: dict) -> str | None:
    return None
