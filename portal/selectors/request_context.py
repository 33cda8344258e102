"""A reviewer's context on one request (#19, item 3): the access diff, who else reaches the schema,
the sessions a revoke touches, the requester's recent requests there, and the approval progress.

Who: reviewers and platform admins, on a request they can see (request_get_for's scope; the view
answers 403 to anyone else). The live part is read from the cluster as the instance's admin login
(provisioning/access_context.py: bounded by short timeouts and LIMITs), at most once per
CACHE_SECONDS per request and plan (the Django cache): the detail page, the queue row and the API
share it, and polling never reaches the cluster. An instance that cannot be read is shown as
such (`unreachable` with the reason, never its DSN); nothing here writes.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from django.core.cache import cache
from django.db.models import Q

from portal.choices import PRIVILEGES, SCHEMA_PRIVILEGES, TABLE_PRIVILEGES, RequestType
from portal.models import ChangeRequest
from portal.selectors.approvals import approval_tally, requirement_of
from provisioning.access_context import SchemaAccess, read_schema_access
from provisioning.connections import describe_error
from provisioning.errors import TargetError

logger = logging.getLogger(__name__)

CACHE_SECONDS = 30
RECENT_LIMIT = 5
ACCESS_TYPES = (RequestType.GRANT, RequestType.REVOKE)


def _cache_key(change: ChangeRequest) -> str:
    # created_at too: a fresh database (tests, a restore) numbers requests from 1 again.
    return f"portal:request-context:{change.pk}:{change.plan_hash}:{change.created_at.timestamp()}"


def _live_access(change: ChangeRequest) -> dict[str, Any]:
    """The catalog's answer for the request's schema and role, cached; {"unreachable": reason} when
    the instance cannot be read."""
    key = _cache_key(change)
    try:
        cached = cache.get(key)
    except Exception:  # a cache outage costs a catalog read, never the page
        logger.warning("request context cache unavailable", exc_info=True)
        cached = None
    if cached is not None:
        return cached
    payload = change.payload
    try:
        access = read_schema_access(change.instance, payload["database"], payload["schema"], payload["role"])
        result: dict[str, Any] = {"access": access, "unreachable": ""}
    except (psycopg.Error, OSError, TargetError) as exc:
        result = {"access": None, "unreachable": describe_error(exc)}
    try:
        cache.set(key, result, CACHE_SECONDS)
    except Exception:
        logger.warning("request context cache unavailable", exc_info=True)
    return result


def access_diff(request_type: str, payload: dict, access: SchemaAccess) -> list[dict[str, Any]]:
    """One row per privilege the role holds or the request names: held now, held after, and a flag:
    `redundant` (a grant of what the role already holds), `added`, `removed`, `not held` (a revoke
    of what it does not hold), or `` (unchanged, not named)."""
    role = payload["role"]
    held = access.grantees.get(role, {})
    requested = [p for p in PRIVILEGES if p in payload.get("privileges", [])]
    schema_requested = [p for p in requested if p in SCHEMA_PRIVILEGES]
    table_requested = [p for p in requested if p in TABLE_PRIVILEGES]
    if request_type == RequestType.GRANT and table_requested and "USAGE" not in schema_requested:
        schema_requested.append("USAGE")  # the grant plan adds it (provisioning/plans/access.py)
    tables = payload.get("tables")
    named_tables = set(tables) if isinstance(tables, list) else None
    rows = []
    for privilege in PRIVILEGES:
        if privilege in SCHEMA_PRIVILEGES:
            now_holds = held.get("schema", {}).get(privilege, 0) > 0
            now_label = "on the schema" if now_holds else ""
            named = privilege in schema_requested
            covered = now_holds
        else:
            on = access.role_tables.get(privilege, set())
            now_holds = bool(on)
            total = access.table_count
            now_label = (f"all {total} tables" if total and len(on) >= total
                         else f"{len(on)} of {total} tables" if on else "")
            named = privilege in table_requested
            covered = (named_tables <= on) if named_tables is not None else (bool(total) and len(on) >= total)
        if not (now_holds or named):
            continue
        scope = ("the schema" if privilege in SCHEMA_PRIVILEGES
                 else ", ".join(sorted(named_tables)) if named_tables is not None else "all tables")
        if request_type == RequestType.GRANT:
            flag = ("redundant" if covered else "added") if named else ""
            after = now_label if not named else (f"{now_label} (unchanged)" if covered else f"+ {scope}")
        else:
            flag = ("removed" if now_holds else "not held") if named else ""
            after = now_label if not named else ("" if named_tables is None or privilege in SCHEMA_PRIVILEGES
                                                 else f"{now_label} − {scope}")
        rows.append({"privilege": privilege, "now": now_label, "after": after, "flag": flag})
    return rows


def reach_of(access: SchemaAccess, role: str) -> list[dict[str, Any]]:
    """Who else reaches the schema and how: each other grantee with its privileges, and the roles
    that reach it through membership of a grantee."""
    members: dict[str, list[str]] = {}
    for via, member, login in access.members:
        members.setdefault(via, []).append(member + ("" if login else " (no login)"))
    rows = []
    for grantee, kinds in sorted(access.grantees.items()):
        if grantee == role:
            continue
        how = []
        for kind in ("schema", "table", "sequence"):
            privileges = kinds.get(kind)
            if privileges:
                how.append(f"{kind}: " + ", ".join(f"{p}" + (f" ×{n}" if kind != "schema" and n > 1 else "")
                                                   for p, n in sorted(privileges.items())))
        rows.append({"grantee": grantee, "how": "; ".join(how), "owner": grantee == access.owner,
                     "builtin": grantee == "PUBLIC" or grantee.startswith("pg_"),
                     "members": members.get(grantee, [])})
    return rows


def recent_requests(viewer: Any, change: ChangeRequest) -> list[ChangeRequest]:
    """The requester's latest other requests on the same schema of the same instance (one query)."""
    payload = change.payload or {}
    schema = payload.get("schema") or (payload.get("name") if change.type == RequestType.SCHEMA else None)
    if not schema or change.requester_id is None:
        return []
    same_schema = Q(payload__schema=schema) | Q(type=RequestType.SCHEMA, payload__name=schema)
    return list(ChangeRequest.objects.restrict(viewer, "view")
                .filter(same_schema, instance_id=change.instance_id, requester_id=change.requester_id)
                .exclude(pk=change.pk).only("pk", "type", "status", "created_at", "payload")
                .order_by("-created_at")[:RECENT_LIMIT])


def approval_progress(change: ChangeRequest, viewer: Any) -> dict[str, Any]:
    """"1 of 2", with the names of those whose approvals count, and the owner team's lead if needed."""
    requirement = requirement_of(change)
    tally = approval_tally(change, requirement, viewer=viewer)
    return {"count": tally.group_approvals, "required": requirement.approvals_required,
            "approvers": tally.approvers, "satisfied": tally.satisfied,
            "lead_team": requirement.owner_lead_team.name if requirement.owner_lead_team else "",
            "lead_approved": tally.lead_approved}


def request_context(viewer: Any, change: ChangeRequest) -> dict[str, Any]:
    """Everything the context panel shows (see the module docstring)."""
    payload = change.payload if isinstance(change.payload, dict) else {}
    # A stored payload is validated at submit; one without these (an old row) gets no diff, never a 500.
    access_request = change.type in ACCESS_TYPES and all(
        isinstance(payload.get(key), str) and payload[key] for key in ("database", "schema", "role"))
    context: dict[str, Any] = {"change": change, "access_request": access_request,
                               "progress": approval_progress(change, viewer),
                               "recent": recent_requests(viewer, change)}
    if access_request:
        live = _live_access(change)
        context["unreachable"] = live["unreachable"]
        access: SchemaAccess | None = live["access"]
        context["access"] = access
        if access is not None:
            context["schema_exists"] = access.schema_exists
            context["diff"] = access_diff(change.type, change.payload, access) if access.schema_exists else []
            context["redundant"] = [row["privilege"] for row in context["diff"] if row["flag"] == "redundant"]
            context["reach"] = reach_of(access, change.payload["role"])
            context["sessions"] = access.sessions
    return context
