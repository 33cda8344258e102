"""The instance inventory: databases, schemas (owner, tables) and roles as the cluster has them.

Read with one query for the cluster (databases and roles, from the maintenance database) and
one query per database (schemas and their tables), stored in InstanceInventory. Submit-time
checks read it; the workers merge each applied role or schema into it (`inventory_patch`),
read it again after other changes (`inventory_refresh_quietly`) and on a beat schedule.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from django.db import connection
from django.utils import timezone
from psycopg import sql

from portal.choices import RequestType
from portal.models import InstanceInventory
from provisioning.admin_login import MANAGED_DATABASE
from provisioning.connections import connect, describe_error

log = structlog.get_logger(__name__)

# Cluster-wide: the databases the admin login manages (admin_login.MANAGED_DATABASE), and every
# role with attributes and memberships.
CLUSTER_QUERY = sql.SQL("""
SELECT
  (SELECT coalesce(json_agg(datname ORDER BY datname), '[]')
     FROM pg_catalog.pg_database WHERE """) + MANAGED_DATABASE + sql.SQL("""),
  (SELECT coalesce(json_object_agg(r.rolname, json_build_object(
       'login', r.rolcanlogin, 'superuser', r.rolsuper, 'createdb', r.rolcreatedb,
       'createrole', r.rolcreaterole, 'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
       'connection_limit', r.rolconnlimit, 'valid_until', r.rolvaliduntil,
       'member_of', coalesce((SELECT json_agg(g.rolname ORDER BY g.rolname)
                                FROM pg_catalog.pg_auth_members m
                                JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                               WHERE m.member = r.oid), '[]'))), '{}')
     FROM pg_catalog.pg_roles r WHERE r.rolname !~ '^pg_')
""")

# Per database: every user schema with its owner and its tables (what GRANT ... ON ALL TABLES
# covers: tables, partitioned tables, views, materialized views, foreign tables).
DATABASE_QUERY = """
SELECT coalesce(json_object_agg(n.nspname, json_build_object(
         'owner', pg_catalog.pg_get_userbyid(n.nspowner),
         'tables', coalesce((SELECT json_agg(c.relname ORDER BY c.relname)
                               FROM pg_catalog.pg_class c
                              WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')), '[]'))),
       '{}')
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
"""


def inventory_read(instance: Any) -> dict:
    """The snapshot of a cluster, as stored in InstanceInventory.snapshot."""
    with connect(instance, autocommit=True) as conn:
        databases, roles = conn.execute(CLUSTER_QUERY).fetchone()
    snapshot: dict = {"databases": {}, "roles": roles}
    for database in databases:
        with connect(instance, database, autocommit=True) as conn:
            (schemas,) = conn.execute(DATABASE_QUERY).fetchone()
        snapshot["databases"][database] = {"schemas": schemas}
    return snapshot


def inventory_refresh(instance: Any) -> Any:
    """Read the cluster and store its inventory; returns the InstanceInventory row.

    Raises psycopg errors when the instance cannot be reached; the stored inventory then stays
    as it was (callers decide whether a stale one is good enough).
    """
    snapshot = inventory_read(instance)
    inventory, _ = InstanceInventory.objects.update_or_create(
        instance=instance, defaults={"snapshot": snapshot, "refreshed_at": timezone.now()})
    return inventory


def inventory_refresh_quietly(instance: Any) -> None:
    """inventory_refresh after an applied change, where an unreachable cluster is only logged."""
    try:
        inventory_refresh(instance)
    except Exception as exc:  # noqa: BLE001 - the change is applied; a stale inventory heals on the next beat
        log.warning("apply.inventory_refresh_failed", instance=instance.pk, error=describe_error(exc))


def inventory_patch(requests: list[Any]) -> list[Any]:
    """Keep the instance inventory (what submit-time checks read) in step with applied changes;
    returns the instances that must be read again instead.

    Grants and revokes change no inventory entry; a new role or schema is merged into the stored
    snapshot by one UPDATE in the database (a full read of the cluster costs a connection per
    database, more than the plan itself; reading and rewriting the whole document here would
    cost the worker time in proportion to the instance's size); other changes (DDL, replicas)
    read the cluster again. The beat job re-reads every instance regularly, so an entry cannot
    stay wrong for long."""
    stale: dict[int, Any] = {}
    patches: dict[int, list[Any]] = {}
    for request in requests:
        if request.type in (RequestType.GRANT, RequestType.REVOKE):
            continue
        if request.type in (RequestType.ROLE, RequestType.SCHEMA):
            patches.setdefault(request.instance_id, []).append(request)
        else:
            stale[request.instance_id] = request.instance
    for instance_id, changes in patches.items():
        if not _merge_into_inventory(instance_id, changes):
            stale[instance_id] = changes[0].instance  # no usable snapshot yet: read the cluster
    return list(stale.values())


def _merge_statement(owners: int, roles: int, schemas: int) -> sql.Composed:
    """UPDATE ... SET snapshot[...] = ..., one subscripted assignment per new entry: a role
    request's entry replaces the stored one; a schema's owner is added only when no role of that
    name is known; a schema is added only when absent (its stored entry lists its tables).
    Missing intermediate objects ("databases", a database) are created, as the concatenation did.

    Each assignment rewrites the document once in the server; the former form (concatenations of
    jsonb_build_object over `snapshot->...` extracts) copied it a dozen times: 28 ms of server CPU
    per apply on a 390 KB inventory (a cluster with tables), 4 ms on a 100 KB one. Every value and
    key is a parameter; the text depends only on how many of each there are (fixed fragments)."""
    table = sql.Identifier(InstanceInventory._meta.db_table)
    add_role = sql.SQL("snapshot['roles'][%s::text] = COALESCE(snapshot['roles'][%s::text], %s::jsonb)")
    set_role = sql.SQL("snapshot['roles'][%s::text] = %s::jsonb")
    add_schema = sql.SQL(
        "snapshot['databases'][%s::text]['schemas'][%s::text]"
        " = COALESCE(snapshot['databases'][%s::text]['schemas'][%s::text], %s::jsonb)")
    assignments = [add_role] * owners + [set_role] * roles + [add_schema] * schemas
    return sql.SQL(
        "UPDATE {} SET {} WHERE instance_id = %s AND jsonb_typeof(snapshot) = 'object' AND snapshot <> '{{}}'::jsonb"
    ).format(table, sql.SQL(", ").join(assignments or [sql.SQL("snapshot = snapshot")]))


def _merge_into_inventory(instance_id: int, changes: list[Any]) -> bool:
    """Merge the new roles and schemas of `changes` into the instance's stored snapshot in one
    statement (the row lock is the UPDATE's own); False when there is no snapshot to merge into."""
    roles: dict[str, dict] = {}
    owners: dict[str, dict] = {}
    schemas: dict[str, dict[str, dict]] = {}
    for request in changes:
        payload = request.payload or {}
        if request.type == RequestType.ROLE:
            roles[payload["name"]] = _role_entry(login=bool(payload.get("login")),
                                                 member_of=list(payload.get("member_of") or []),
                                                 connection_limit=payload.get("connection_limit"),
                                                 valid_until=payload.get("valid_until"))
            continue
        owner = payload.get("owner_role") or ""
        if owner:
            owners.setdefault(owner, _role_entry(login=False, member_of=[]))
        schemas.setdefault(payload["database"], {}).setdefault(payload["name"], {"owner": owner, "tables": []})
    owners = {name: entry for name, entry in owners.items() if name not in roles}  # the role request's entry wins
    params: list[Any] = []
    for name, entry in owners.items():
        params += [name, name, json.dumps(entry)]
    for name, entry in roles.items():
        params += [name, json.dumps(entry)]
    added = [(database, name, entry) for database, entries in schemas.items() for name, entry in entries.items()]
    for database, name, entry in added:
        params += [database, name, database, name, json.dumps(entry)]
    with connection.cursor() as cursor:
        cursor.execute(_merge_statement(len(owners), len(roles), len(added)), [*params, instance_id])
        return cursor.rowcount == 1


def _role_entry(*, login: bool, member_of: list[str], connection_limit: Any = None, valid_until: Any = None) -> dict:
    # The shape CLUSTER_QUERY stores; the plan denies every other attribute.
    return {"login": login, "superuser": False, "createdb": False, "createrole": False, "replication": False,
            "bypassrls": False, "connection_limit": -1 if connection_limit is None else connection_limit,
            "valid_until": valid_until, "member_of": sorted(member_of)}
