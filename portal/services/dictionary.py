"""Data dictionary writes (issue #21): snapshots of each managed database, comment edits as requests.

- `dictionary_refresh(instance)` runs in the per-instance beat task (as the system): it reads each
  managed database's catalog (provisioning/dictionary.py) and stores a new DictionarySnapshot when
  the structure changed, with the diff to the previous one, each change linked to the applied
  request that made it when the portal's records show one, else marked "outside the portal".
  Reading is not a change: no audit event (the requests that changed things have theirs).
- `dictionary_comment_request(...)` turns "edit this comment" into a `ddl` request
  (`COMMENT ON TABLE|VIEW|MATERIALIZED VIEW|FOREIGN TABLE|COLUMN ... IS ...`, rendered with
  psycopg.sql: identifiers quoted, the text a literal) filed through `request_submit` for the team
  owning the schema: the normal review, risk rules, DDL scope and audit (`request.submitted`) apply.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from portal.choices import RequestStatus, RequestType
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import ChangeRequest, DictionarySnapshot, Instance, ManagedSchema, Membership
from portal.services.requests import request_submit
from provisioning import dictionary

log = structlog.get_logger(__name__)

OUTSIDE = "outside the portal"
MAX_COMMENT = 2000
COMMENT_KINDS = {"table": "TABLE", "view": "VIEW", "materialized view": "MATERIALIZED VIEW",
                 "foreign table": "FOREIGN TABLE", "partitioned table": "TABLE"}
# Requests applied a little before the previous check may still have been in flight when it read.
LINK_SLACK = timedelta(minutes=5)


def _request_for(change: dict, candidates: list[ChangeRequest]) -> ChangeRequest | None:
    """The applied request whose payload names the change's schema and whose plan names its
    object; the newest first."""
    for request in candidates:
        payload = request.payload or {}
        plan = json.dumps(request.plan)
        if request.type == RequestType.SCHEMA:
            if change["object"] == "schema" and payload.get("name") == change["schema"]:
                return request
            continue
        if payload.get("schema") != change["schema"]:
            continue
        if change["table"] is None or change["table"] in plan:
            return request
    return None


def link_changes(instance: Instance, database: str, changes: list[dict], *, since, until) -> list[dict]:
    candidates = list(ChangeRequest.objects.filter(
        instance=instance, status=RequestStatus.APPLIED, applied_at__gt=since - LINK_SLACK, applied_at__lte=until,
        payload__database=database).order_by("-applied_at"))
    for change in changes:
        request = _request_for(change, candidates)
        change["request_id"] = request.pk if request else None
        change["source"] = f"request #{request.pk}" if request else OUTSIDE
    return changes


def snapshot_store(instance: Instance, database: str, body: dict, *, at=None) -> DictionarySnapshot:
    """Store what `body` says of the database: a new row when its structure changed."""
    at = at or timezone.now()
    digest = dictionary.digest(body)
    with transaction.atomic():
        latest = (DictionarySnapshot.objects.select_for_update().filter(instance=instance, database=database)
                  .order_by("-taken_at").first())
        if latest is not None and latest.digest == digest:
            latest.body, latest.checked_at = body, at
            latest.save(update_fields=["body", "checked_at"])
            return latest
        changes = [] if latest is None else link_changes(
            instance, database, dictionary.diff(latest.body, body), since=latest.checked_at, until=at)
        return DictionarySnapshot.objects.create(instance=instance, database=database, taken_at=at, checked_at=at,
                                                 digest=digest, body=body, changes=changes)


def dictionary_refresh(instance: Instance) -> dict[str, str]:
    """Snapshot every managed database of the instance; an unreadable one is reported, not raised."""
    results: dict[str, str] = {}
    try:
        databases = dictionary.managed_databases(instance)
    except dictionary.DictionaryUnavailable as exc:  # a down instance keeps its last dictionary
        log.warning("dictionary.refresh_failed", instance=instance.pk, error=str(exc))
        return {"": "unreachable"}
    for database in databases:
        try:
            body = dictionary.read_dictionary(instance, database)
        except dictionary.DictionaryUnavailable as exc:
            results[database] = f"failed: {exc}"
            continue
        snapshot = snapshot_store(instance, database, body)
        results[database] = "changed" if snapshot.taken_at == snapshot.checked_at and snapshot.changes else "ok"
    return results


def dictionary_comment_request(*, user: Any, actor_ip: str | None, instance: Instance, database: str, schema: str,
                               table: str, column: str | None, comment: str, justification: str) -> ChangeRequest:
    """File the `COMMENT ON` for an object of the latest snapshot as a ddl request of the team
    owning its schema (the user must be a member of it). The object must exist in the snapshot."""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT or "\x00" in comment:
        raise InvalidPayload.field("comment", f"text of at most {MAX_COMMENT} characters")
    snapshot = (DictionarySnapshot.objects.filter(instance=instance, database=database).order_by("-taken_at").first())
    if snapshot is None:
        raise InvalidPayload.field("database", "no dictionary of this database yet")
    tables = snapshot.body.get("schemas", {}).get(schema, {}).get("tables", {})
    if schema not in snapshot.body.get("schemas", {}):
        raise InvalidPayload.field("schema", "no such schema in the dictionary")
    if table not in tables:
        raise InvalidPayload.field("table", "no such table in the schema")
    entry = tables[table]
    if column is not None and column not in {c["name"] for c in entry["columns"]}:
        raise InvalidPayload.field("column", "no such column in the table")
    owner = ManagedSchema.objects.filter(instance=instance, database=database, name=schema).select_related("team").first()
    if owner is None:
        raise PolicyViolation("this schema is not managed by the portal: no team owns it")
    if not Membership.objects.filter(team=owner.team, user=user).exists():
        raise PolicyViolation(f"only members of {owner.team.name}, which owns {schema}, may change its comments")
    text = sql.Literal(comment) if comment else sql.SQL("NULL")
    if column is None:
        kind = COMMENT_KINDS.get(entry["kind"])
        if kind is None:
            raise InvalidPayload.field("table", f"comments on a {entry['kind']} are not filed here")
        statement = sql.SQL("COMMENT ON {kind} {target} IS {text}").format(
            kind=sql.SQL(kind), target=sql.Identifier(schema, table), text=text)
    else:
        statement = sql.SQL("COMMENT ON COLUMN {target} IS {text}").format(
            target=sql.Identifier(schema, table, column), text=text)
    return request_submit(user=user, actor_ip=actor_ip, type=RequestType.DDL, instance=instance, team=owner.team,
                          justification=justification,
                          payload={"database": database, "schema": schema, "sql": statement.as_string(None) + ";"})
