"""Name reservations: the role and schema names an open request will create, claimed from submit.

Two open requests (any teams) never both create the same role or schema on an instance: the
claim is a row of NameReservation under a unique constraint, inserted in the submit transaction,
so of two submits at the same instant exactly one commits and the other is a 409 naming the
request that holds the name (no check-then-insert window). Rows are deleted in the transaction
that ends the request: rejected, cancelled, applied (the names then live in ManagedRole /
ManagedSchema) or failed; a reviewer's retry of a failed request claims them again. Which
statuses are "open": portal.choices.OPEN_STATUSES.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q
from psycopg import sql

from portal.choices import NameKind, RequestType
from portal.errors import NameConflict
from portal.models import ChangeRequest, NameReservation


@dataclass(frozen=True)
class Claim:
    """One name a request creates, and the payload field a conflict is reported on."""

    kind: str
    database: str
    name: str
    field: str

    def describe(self) -> str:
        return f"schema {self.name!r} in database {self.database!r}" if self.kind == NameKind.SCHEMA \
            else f"role {self.name!r}"


def claims_of(request_type: str, payload: Any) -> list[Claim]:
    """The names a validated payload creates: a role request its role; a schema request its schema,
    and its owner role when the plan creates it (a reused owner role is the team's already)."""
    if not isinstance(payload, dict):
        return []
    if request_type == RequestType.ROLE and payload.get("name"):
        return [Claim(NameKind.ROLE, "", payload["name"], "payload.name")]
    if request_type == RequestType.SCHEMA and payload.get("name"):
        claims = [Claim(NameKind.SCHEMA, payload.get("database") or "", payload["name"], "payload.name")]
        if payload.get("owner_role") and payload.get("create_owner_role", True):
            claims.append(Claim(NameKind.ROLE, "", payload["owner_role"], "payload.owner_role"))
        return claims
    return []


def _matching(instance_id: int, claims: Iterable[Claim]) -> Q:
    query = Q(pk__in=[])
    for claim in claims:
        query |= Q(kind=claim.kind, database=claim.database, name=claim.name)
    return Q(instance_id=instance_id) & query


def _conflict(instance_id: int, claims: list[Claim], *, exclude_request: int | None = None) -> NameConflict | None:
    """A NameConflict naming every claimed name and its holder, or None when all are free."""
    held = NameReservation.objects.filter(_matching(instance_id, claims)).select_related("request")
    if exclude_request is not None:
        held = held.exclude(request_id=exclude_request)
    holders = {(r.kind, r.database, r.name): r.request for r in held}
    errors: dict[str, list[str]] = {}
    first: tuple[str, int] | None = None
    for claim in claims:
        holder = holders.get((claim.kind, claim.database, claim.name))
        if holder is None:
            continue
        message = (f"{claim.describe()} is already claimed by request #{holder.pk} ({holder.status}); "
                   f"it is free again once that request is applied, rejected, cancelled or fails")
        errors.setdefault(claim.field, []).append(message)
        first = first or (message, holder.pk)
    if first is None:
        return None
    return NameConflict(first[0], errors=errors, holder_id=first[1])


def names_check_free(*, instance: Any, request_type: str, payload: Any) -> None:
    """Raise NameConflict (409) when another open request claims a name this payload creates. A read
    for the preview and an early answer; the guarantee is the insert in names_reserve()."""
    claims = claims_of(request_type, payload)
    if claims:
        conflict = _conflict(instance.pk, claims)
        if conflict is not None:
            raise conflict


# One statement: rows that conflict with a committed claim are skipped, and RETURNING says which
# went in. A claim still being inserted by a concurrent submit makes this wait for its commit (the
# unique index decides), then counts as taken. Values are parameters; the text is constant.
_RESERVE = sql.SQL(
    "INSERT INTO {reservations} (instance_id, kind, database, name, request_id, created_at)"
    " SELECT %s, v.kind, v.database, v.name, %s, now()"
    " FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(kind, database, name)"
    " ON CONFLICT (instance_id, kind, database, name) DO NOTHING RETURNING kind, database, name"
).format(reservations=sql.Identifier(NameReservation._meta.db_table)).as_string(None)


def names_reserve(request: ChangeRequest, *, renew: bool = False) -> None:
    """Claim the names `request` creates, inside the caller's transaction (submit, retry); raise
    NameConflict (409) naming the holder when another open request has one of them.

    renew: the request may hold some already (a retry of a request that failed before reservations
    existed, or whose failure was recorded by other means): its own rows are replaced, not a conflict."""
    claims = claims_of(request.type, request.payload)
    if not claims:
        return
    if renew:
        NameReservation.objects.filter(request=request).delete()
    with connection.cursor() as cursor:
        cursor.execute(_RESERVE, [request.instance_id, request.pk, [c.kind for c in claims],
                                  [c.database for c in claims], [c.name for c in claims]])
        inserted = {tuple(row) for row in cursor.fetchall()}
    missing = [c for c in claims if (c.kind, c.database, c.name) not in inserted]
    if missing:
        # The caller's transaction rolls back on the error, taking the rows that did go in with it.
        raise _conflict(request.instance_id, missing, exclude_request=request.pk) or NameConflict(
            "a name of this request is claimed by another request; submit again",
            errors={missing[0].field: ["claimed by another request"]})


def names_release(requests: Iterable[Any]) -> None:
    """Give back the names of requests that ended, in the caller's transaction (the transition's)."""
    NameReservation.release_for(list(requests))
