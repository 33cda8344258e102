"""The portal's records of what it created (ManagedSchema, ManagedRole, Grant), kept by applies.

`managed_record_applied(request)` is called by the engine (provisioning/engine/record.py) in the portal transaction that marks
a request applied: these rows are the desired state drift is checked against, and what the
submit-time checks of later requests (a grant on a schema, a role's groups) look up.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from portal.choices import RequestType
from portal.models import ChangeRequest, Grant, ManagedRole, ManagedSchema


def managed_record_applied(request: ChangeRequest) -> None:
    managed_record_applied_many([request])


# savepoint=False: called once per batch inside the executor's transaction; a failure dooms it.
@transaction.atomic(savepoint=False)
def managed_record_applied_many(requests: list[ChangeRequest]) -> None:
    """Record what applied requests created, with a few bulk statements for a whole batch.

    Upserts keep the semantics of one request at a time: a role request updates the role's
    row (it may have been dropped and made again), a schema's owner role and the schema are
    created only if missing, a grant row is written once per request (a recovered retry
    records it again)."""
    by_type: dict[str, list[ChangeRequest]] = {}
    for request in requests:
        by_type.setdefault(request.type, []).append(request)
    roles = by_type.get(RequestType.ROLE, [])
    if roles:
        ManagedRole.objects.bulk_create(
            [ManagedRole(instance_id=r.instance_id, name=r.payload["name"], login=r.payload["login"],
                         member_of=r.payload.get("member_of", []), team_id=r.team_id, request=r, dropped_at=None)
             for r in _last_per_key(roles, lambda r: (r.instance_id, r.payload["name"]))],
            update_conflicts=True, unique_fields=["instance", "name"],
            update_fields=["login", "member_of", "team", "request", "dropped_at"])
    schemas = by_type.get(RequestType.SCHEMA, [])
    if schemas:
        ManagedRole.objects.bulk_create(
            [ManagedRole(instance_id=r.instance_id, name=r.payload["owner_role"], login=False, team_id=r.team_id,
                         request=r) for r in schemas],
            ignore_conflicts=True)
        ManagedSchema.objects.bulk_create(
            [ManagedSchema(instance_id=r.instance_id, database=r.payload["database"], name=r.payload["name"],
                           owner_role=r.payload["owner_role"], team_id=r.team_id, request=r) for r in schemas],
            ignore_conflicts=True)
    grants = by_type.get(RequestType.GRANT, [])
    if grants:
        recorded = set(Grant.objects.filter(request__in=grants).values_list("request_id", flat=True))
        Grant.objects.bulk_create([
            Grant(request=r, instance_id=r.instance_id, database=r.payload["database"], schema=r.payload["schema"],
                  role=r.payload["role"], privileges=r.payload["privileges"], tables=r.payload["tables"] or [],
                  default_privileges=r.payload["default_privileges"], team_id=r.team_id,
                  expires_at=parse_datetime(r.payload["expires_at"]) if r.payload.get("expires_at") else None)
            for r in grants if r.pk not in recorded
        ])
    for request in by_type.get(RequestType.REVOKE, []):
        _record_revoke(request)
    dropped = by_type.get(RequestType.DROP_ROLE, [])
    if dropped:
        # A removed role stays recorded (its name stays taken: provisioning/plans/role.py), dropped.
        for request in dropped:
            ManagedRole.objects.filter(instance_id=request.instance_id, name=request.payload["name"],
                                       dropped_at__isnull=True).update(dropped_at=timezone.now())


def _last_per_key(requests: list[ChangeRequest], key) -> list[ChangeRequest]:
    # An upsert may not touch one row twice: the last request for a role wins, as in sequence.
    return list({key(r): r for r in requests}.values())


def _record_revoke(request: ChangeRequest) -> None:
    """Take the revoked privileges off the active grants; a grant left with none is revoked."""
    payload = request.payload
    revoked = set(payload["privileges"])
    active = Grant.objects.select_for_update().filter(
        instance=request.instance, database=payload["database"], schema=payload["schema"], role=payload["role"],
        revoked_at__isnull=True)
    for grant in active:
        remaining = [p for p in grant.privileges if p not in revoked]
        if remaining:
            grant.privileges = remaining
            grant.save(update_fields=["privileges"])
        else:
            grant.revoked_at = timezone.now()
            grant.revoked_by = request
            grant.save(update_fields=["revoked_at", "revoked_by"])
