"""Checks shared by the plan modules: the naming rule, payload keys, dates, the inventory.

Pure like the plans: what they know of the instance comes from the PlanContext.

Every check adds messages to an `Errors` collector keyed "payload.<field>", so one bad
request answers every problem at once, and the caller raises InvalidPayload from it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from portal.errors import InvalidPayload
from provisioning.naming import MAX_NAME_BYTES, NAME_RE, NAME_RULE, name_problem  # noqa: F401 - re-exported
from provisioning.plans.context import PlanContext

# How far ahead expiry / validity dates may lie (ten years); further is almost surely a typo.
MAX_HORIZON = timedelta(days=3650)


class Errors:
    """Collects messages by field; `raise_if_any()` turns them into one InvalidPayload."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.by_field.setdefault(f"payload.{field}" if not field.startswith("payload") else field, []).append(message)

    def has(self, field: str) -> bool:
        return f"payload.{field}" in self.by_field

    def raise_if_any(self) -> None:
        if self.by_field:
            field, messages = next(iter(self.by_field.items()))
            raise InvalidPayload(f"{field}: {messages[0]}", errors=self.by_field)


def rendered_name(value: Any, *, role: bool = False) -> str:
    """`value` when it meets the naming rule, else ValueError: for plans that create or name roles
    and schemas, so a stored payload that never met today's rule (an old "name\n") cannot be
    rendered into a plan either; the executor then fails it as a plan it cannot render again."""
    problem = name_problem(value, role=role)
    if problem:
        raise ValueError(f"{value!r} breaks the naming rule: {problem}")
    return value


def check_name(errors: Errors, payload: dict, field: str, *, role: bool = False) -> str | None:
    problem = name_problem(payload.get(field), role=role)
    if problem:
        errors.add(field, problem)
        return None
    return payload[field]


def storable(value: Any) -> bool:
    """False when a string anywhere in `value` holds a NUL or an unpaired surrogate.

    JSON allows both ("\\u0000", "\\ud800"); PostgreSQL text and jsonb do not, and a surrogate
    cannot even be encoded to UTF-8: without this check such input is a 500, not a 400
    (found by the plan property tests).
    """
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(storable(v) for v in value)
    return True


def check_keys(errors: Errors, payload: Any, *, required: set[str], optional: set[str]) -> bool:
    """Unknown keys are refused (a `superuser: true` is never silently dropped)."""
    if not isinstance(payload, dict):
        errors.add("payload", "must be a JSON object")
        return False
    if not all(storable(key) for key in payload):
        errors.add("payload", "field names must be text without NUL or unpaired surrogates")
        return False
    unstorable = sorted(key for key, value in payload.items() if not storable(value))
    for key in unstorable:
        errors.add(str(key), "holds a NUL character or an unpaired surrogate, which PostgreSQL cannot store")
    if unstorable:
        return False
    for key in sorted(set(payload) - required - optional, key=str):
        errors.add(str(key), "unknown field for this request type")
    for key in sorted(required - set(payload)):
        errors.add(key, "this field is required")
    return True


def check_bool(errors: Errors, payload: dict, field: str, default: bool = False) -> bool:
    value = payload.get(field, default)
    if not isinstance(value, bool):
        errors.add(field, "must be true or false")
        return default
    return value


def check_future_datetime(errors: Errors, payload: dict, field: str) -> str | None:
    """An ISO 8601 date-time with a timezone, in the future; returned normalised to UTC ISO."""
    value = payload.get(field)
    if value is None:
        return None
    parsed: datetime | None = None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    if parsed is None:
        errors.add(field, "must be an ISO 8601 date-time, e.g. 2030-01-31T18:00:00Z")
        return None
    if timezone.is_naive(parsed):
        errors.add(field, "must carry a timezone (e.g. Z or +02:00)")
        return None
    now = timezone.now()
    if parsed <= now:
        errors.add(field, "must be in the future")
        return None
    if parsed > now + MAX_HORIZON:
        errors.add(field, "must be within ten years")
        return None
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def inventory_snapshot(errors: Errors, ctx: PlanContext) -> dict | None:
    """The instance's inventory, or an error on `instance` when the workers never read it."""
    if ctx.inventory is None:
        errors.add("payload", "the instance's inventory is not available yet (is the instance reachable?)")
    return ctx.inventory


def ensure_writable(ctx: PlanContext, field: str = "instance") -> None:
    """Refuse a write (schema, role, grant, revoke, ddl) aimed at a read replica: 400 naming `field`."""
    instance = ctx.instance
    if instance.replica_of is not None:
        primary = instance.replica_of or "its primary"
        raise InvalidPayload.field(
            field, f"{instance.name} is a read-only replica of {primary}; send changes to {primary}"
        )


def validation_start(payload: Any, ctx: PlanContext, *, required: set[str], optional: set[str]
                     ) -> tuple[Errors, dict | None]:
    """How a write plan's validate() begins: no writes to a read replica (400 on "instance"), the
    payload's keys (raised at once when it cannot be read further), then the instance's inventory.
    Returns the errors collected so far (the caller adds its own and raises) and the snapshot."""
    ensure_writable(ctx)
    errors = Errors()
    if not check_keys(errors, payload, required=required, optional=optional):
        errors.raise_if_any()
    return errors, inventory_snapshot(errors, ctx)


def check_database(errors: Errors, payload: dict, snapshot: dict | None) -> str | None:
    database = payload.get("database")
    if not isinstance(database, str) or not database:
        errors.add("database", "required: a database name")
        return None
    if len(database.encode()) > MAX_NAME_BYTES:
        errors.add("database", f"at most {MAX_NAME_BYTES} bytes")
        return None
    if snapshot is not None and database not in snapshot.get("databases", {}):
        errors.add("database", f"no database {database!r} on this instance")
        return None
    return database


def schemas_of(snapshot: dict | None, database: str | None) -> dict:
    if not snapshot or not database:
        return {}
    return snapshot.get("databases", {}).get(database, {}).get("schemas", {})


