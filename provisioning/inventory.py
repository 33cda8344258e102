"""The instance inventory: databases, schemas (owner, tables) and roles as the cluster has them.

Read with one query for the cluster (databases and roles, from the maintenance database) and
one query per database (schemas and their tables), stored in InstanceInventory. Submit-time
checks read it; the workers refresh it after each apply and on a beat schedule.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from psycopg import sql

from provisioning.admin_login import MANAGED_DATABASE
from provisioning.connections import connect

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


# Attribute of an Instance object holding the InstanceInventory row the current validation
# reads (set and cleared by portal.services.requests.request_preview); None = the instance has none.
INVENTORY_KEPT = "_portal_inventory"


def inventory_refresh(instance: Any) -> Any:
    """Read the cluster and store its inventory; returns the InstanceInventory row.

    Raises psycopg errors when the instance cannot be reached; the stored inventory then stays
    as it was (callers decide whether a stale one is good enough).
    """
    from portal.models import InstanceInventory

    snapshot = inventory_read(instance)
    inventory, _ = InstanceInventory.objects.update_or_create(
        instance=instance, defaults={"snapshot": snapshot, "refreshed_at": timezone.now()})
    return inventory
