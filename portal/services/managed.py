"""The portal's records of what it created (ManagedSchema, ManagedRole, Grant), kept by applies.

`managed_record_applied(request)` is called by the executor in the portal transaction that marks
a request applied: these rows are the desired state drift is checked against, and what the
submit-time checks of later requests (a grant on a schema, a role's groups) look up.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from portal.choices import RequestType
from portal.models import ChangeRequest, Grant, ManagedRole, ManagedSchema


@transaction.atomic
def managed_record_applied(request: ChangeRequest) -> None:
    payload, instance, team = request.payload, request.instance, request.team
    if request.type == RequestType.SCHEMA:
        ManagedRole.objects.get_or_create(
            instance=instance, name=payload["owner_role"],
            defaults={"login": False, "team": team, "request": request})
        ManagedSchema.objects.get_or_create(
            instance=instance, database=payload["database"], name=payload["name"],
            defaults={"owner_role": payload["owner_role"], "team": team, "request": request})
    elif request.type == RequestType.ROLE:
        ManagedRole.objects.update_or_create(
            instance=instance, name=payload["name"],
            defaults={"login": payload["login"], "member_of": payload.get("member_of", []), "team": team,
                      "request": request, "dropped_at": None})
    elif request.type == RequestType.GRANT:
        expires_at = parse_datetime(payload["expires_at"]) if payload.get("expires_at") else None
        Grant.objects.get_or_create(
            request=request,
            defaults={"instance": instance, "database": payload["database"], "schema": payload["schema"],
                      "role": payload["role"], "privileges": payload["privileges"], "tables": payload["tables"] or [],
                      "default_privileges": payload["default_privileges"], "team": team, "expires_at": expires_at})
    elif request.type == RequestType.REVOKE:
        _record_revoke(request)


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
