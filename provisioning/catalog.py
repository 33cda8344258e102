"""Who holds which privilege on a cluster, read from the catalogs in one query per database.

Shared by the entitlements report (audit) and the drift scan (provisioning). One query over
aclexplode(nspacl), aclexplode(relacl) and pg_default_acl per database, plus one for roles
and memberships per cluster: ~160 ms at 10,000 roles x 2,000 tables, where has_*_privilege
cross joins take seconds (FACTS.md). A NULL ACL means the built-in default (the owner holds
everything), so acldefault() fills it in and owners appear like any other grantee.
"""

from __future__ import annotations

from typing import NamedTuple

import psycopg
from psycopg import sql

from provisioning.admin_login import MANAGED_DATABASE
from provisioning.connections import connect

PUBLIC = "PUBLIC"

# object_type: schema | table (tables, views, matviews, foreign and partitioned tables) |
# sequence | default (default privileges: object = 'r' tables, 'S' sequences, 'f' functions, ...)
#
# Role names come from pg_get_userbyid (a syscache lookup per row), not three joins with pg_roles
# (three hash tables of every role, built per query), and the rows come unsorted: both callers
# (the drift scan, live entitlements) index them and sort what they show. At 5,000 roles
# (10,000 rows) the cluster's backend spent ~40 ms of CPU on the query with the joins and the
# ORDER BY, ~20 ms without (bench/scale.py's bare catalog queries run this same SQL). ACLs only
# name existing roles (PostgreSQL refuses to drop a role that still holds privileges).
PRIVILEGES_SQL = """
WITH acl AS (
    SELECT 'schema'::text AS object_type, n.nspname::text AS schema, NULL::text AS object,
           n.nspowner AS owner, a.grantee, a.grantor, a.privilege_type, a.is_grantable
    FROM pg_namespace n
    CROSS JOIN LATERAL aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  UNION ALL
    SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, n.nspname::text, c.relname::text,
           c.relowner, a.grantee, a.grantor, a.privilege_type, a.is_grantable
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL aclexplode(COALESCE(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                               c.relowner))) a
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  UNION ALL
    SELECT 'default', COALESCE(n.nspname::text, ''), d.defaclobjtype::text,
           d.defaclrole, a.grantee, a.grantor, a.privilege_type, a.is_grantable
    FROM pg_default_acl d
    LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
    CROSS JOIN LATERAL aclexplode(d.defaclacl) a
)
SELECT acl.object_type, acl.schema, acl.object,
       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee)::text END,
       pg_get_userbyid(acl.grantor)::text, pg_get_userbyid(acl.owner)::text, acl.privilege_type, acl.is_grantable
FROM acl
"""

ROLES_SQL = """
SELECT r.rolname::text, r.rolsuper, r.rolcanlogin, r.rolcreaterole, r.rolcreatedb, r.rolreplication,
       r.rolbypassrls, r.rolvaliduntil,
       COALESCE(array_agg(g.rolname::text ORDER BY g.rolname) FILTER (WHERE g.rolname IS NOT NULL), '{}')
FROM pg_roles r
LEFT JOIN pg_auth_members m ON m.member = r.oid
LEFT JOIN pg_roles g ON g.oid = m.roleid
WHERE r.rolname NOT LIKE 'pg\\_%'
GROUP BY r.oid, r.rolname, r.rolsuper, r.rolcanlogin, r.rolcreaterole, r.rolcreatedb, r.rolreplication,
         r.rolbypassrls, r.rolvaliduntil
ORDER BY r.rolname
"""

# The databases the admin login manages; one definition with the inventory's (admin_login.py).
DATABASES_SQL = sql.SQL("SELECT datname::text FROM pg_database WHERE ") + MANAGED_DATABASE + sql.SQL(" ORDER BY datname")


class Privilege(NamedTuple):
    """One privilege of one grantee on one object (the owner's implicit ones included).

    A named tuple, not a dataclass: a scan builds one per catalog row (tens of thousands on a
    large cluster), and a frozen dataclass's __init__ cost several times a tuple's (bench/scale.py)."""

    database: str
    object_type: str  # schema | table | sequence | default
    schema: str
    object: str | None  # table or sequence name; for `default`, the object kind letter
    grantee: str  # role name, or PUBLIC
    grantor: str | None
    owner: str | None  # owner of the object (for `default`: the role whose new objects get it)
    privilege: str  # SELECT, USAGE, ...
    grantable: bool

    @property
    def by_owner(self) -> bool:
        return self.grantee == self.owner and self.object_type != "default"


class RoleInfo(NamedTuple):
    name: str
    superuser: bool
    login: bool
    createrole: bool
    createdb: bool
    replication: bool
    bypassrls: bool
    valid_until: object
    member_of: tuple[str, ...]


def read_privileges(conn: psycopg.Connection, database: str) -> list[Privilege]:
    """Every privilege in the connected database (one query)."""
    with conn.cursor() as cursor:
        cursor.execute(PRIVILEGES_SQL)
        make = Privilege._make
        # fetchall: psycopg loads every row in one call (iterating the cursor costs a Python
        # call per row: most of read_privileges' own time at 5,000 roles).
        return [make((database, *row)) for row in cursor.fetchall()]


def read_roles(conn: psycopg.Connection) -> dict[str, RoleInfo]:
    """Roles (cluster-wide) with their attributes and the roles they are members of (one query)."""
    with conn.cursor() as cursor:
        cursor.execute(ROLES_SQL)
        return {row[0]: RoleInfo(*row[:8], tuple(row[8])) for row in cursor.fetchall()}


def read_databases(conn: psycopg.Connection) -> list[str]:
    with conn.cursor() as cursor:
        cursor.execute(DATABASES_SQL)
        return [row[0] for row in cursor]


def snapshot(instance, databases: list[str] | None = None) -> tuple[dict[str, RoleInfo], list[Privilege]]:
    """Roles and privileges of an instance: one connection and one query per database (the
    connection that read the roles serves its own database too: a connection costs more than
    the query, password authentication included)."""
    by_database: dict[str, list[Privilege]] = {}
    with connect(instance, autocommit=True) as conn:
        roles = read_roles(conn)
        names = databases if databases is not None else read_databases(conn)
        first = conn.info.dbname
        if first in names:
            by_database[first] = read_privileges(conn, first)
    for name in names:
        if name not in by_database:
            with connect(instance, name, autocommit=True) as conn:
                by_database[name] = read_privileges(conn, name)
    return roles, [privilege for name in names for privilege in by_database[name]]
