"""Who can reach one schema now, read live from a managed cluster for a reviewer (#19, item 3).

One connection to the request's database, as the instance's admin login, with short timeouts
(3 s to connect, 2 s per statement) and bounded answers (LIMITs below): a slow or unreachable
instance costs a reviewer a few seconds and a note, never a 500. Four small queries:
  * the privileges on the schema, its tables and sequences, by grantee (aggregated: one row per
    grantee, kind and privilege, with how many objects carry it);
  * the tables the role itself holds each table privilege on (to tell "all tables" apart);
  * the roles that reach the schema through membership of a grantee (recursive, bounded);
  * the sessions of the role and of the roles that inherit from it (pg_stat_activity): the ones a
    revoke takes the privilege away from. No query text is read, only who, from where, since when.
Every value is a parameter; nothing here is composed from a name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from provisioning.connections import connect

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 2000
MAX_GRANTEE_ROWS = 500
MAX_MEMBER_ROWS = 200
MAX_SESSIONS = 50
MAX_ROLE_TABLE_ROWS = 5000

SCHEMA_SQL = """
SELECT n.oid, r.rolname::text,
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))
FROM pg_namespace n LEFT JOIN pg_roles r ON r.oid = n.nspowner
WHERE n.nspname = %(schema)s
"""

GRANTEES_SQL = """
WITH acl AS (
    SELECT 'schema'::text AS kind, a.grantee, a.privilege_type
    FROM pg_namespace n
    CROSS JOIN LATERAL aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE n.oid = %(nsp)s
  UNION ALL
    SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, a.grantee, a.privilege_type
    FROM pg_class c
    CROSS JOIN LATERAL aclexplode(COALESCE(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                               c.relowner))) a
    WHERE c.relnamespace = %(nsp)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
)
SELECT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE g.rolname::text END, acl.kind, acl.privilege_type, count(*)
FROM acl LEFT JOIN pg_roles g ON g.oid = acl.grantee
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
LIMIT %(limit)s
"""

ROLE_TABLES_SQL = """
SELECT c.relname::text, a.privilege_type
FROM pg_class c
CROSS JOIN LATERAL aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a
WHERE c.relnamespace = %(nsp)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
ORDER BY 1, 2
LIMIT %(limit)s
"""

MEMBERS_SQL = """
WITH RECURSIVE reach(member, via) AS (
    SELECT m.member, m.roleid FROM pg_auth_members m
    WHERE m.roleid IN (SELECT oid FROM pg_roles WHERE rolname = ANY(%(grantees)s))
  UNION
    SELECT m.member, reach.via FROM pg_auth_members m JOIN reach ON m.roleid = reach.member
)
SELECT v.rolname::text, r.rolname::text, r.rolcanlogin
FROM reach JOIN pg_roles r ON r.oid = reach.member JOIN pg_roles v ON v.oid = reach.via
ORDER BY 1, 2
LIMIT %(limit)s
"""

SESSIONS_SQL = """
SELECT a.pid, a.usename::text, a.datname::text, COALESCE(a.application_name, ''),
       COALESCE(host(a.client_addr), 'local'), COALESCE(a.state, ''), a.backend_start
FROM pg_stat_activity a
WHERE a.usesysid IS NOT NULL AND a.pid <> pg_backend_pid()
  AND EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = %(role)s AND pg_has_role(a.usesysid, r.oid, 'MEMBER'))
ORDER BY a.backend_start
LIMIT %(limit)s
"""


@dataclass
class SchemaAccess:
    """What the catalog says about one schema and one role (see the module docstring)."""

    schema_exists: bool
    owner: str | None = None
    table_count: int = 0
    # grantee -> kind (schema | table | sequence) -> privilege -> how many objects carry it
    grantees: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    role_tables: dict[str, set[str]] = field(default_factory=dict)  # table privilege -> tables the role holds it on
    members: list[tuple[str, str, bool]] = field(default_factory=list)  # (grantee, member, can log in)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def read_schema_access(instance: Any, database: str, schema: str, role: str) -> SchemaAccess:
    """The live access to `database`.`schema` and `role`'s sessions; raises psycopg.Error when the
    instance cannot be read (the caller says so on the page)."""
    with connect(instance, database, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                 statement_timeout_ms=STATEMENT_TIMEOUT_MS, lock_timeout_ms=STATEMENT_TIMEOUT_MS) as conn, \
            conn.cursor() as cursor:
        cursor.execute(SCHEMA_SQL, {"schema": schema})
        row = cursor.fetchone()
        access = SchemaAccess(schema_exists=row is not None)
        if row is not None:
            nsp, access.owner, access.table_count = row
            cursor.execute(GRANTEES_SQL, {"nsp": nsp, "limit": MAX_GRANTEE_ROWS})
            rows = cursor.fetchall()
            access.truncated = len(rows) >= MAX_GRANTEE_ROWS
            for grantee, kind, privilege, count in rows:
                access.grantees.setdefault(grantee, {}).setdefault(kind, {})[privilege] = count
            cursor.execute(ROLE_TABLES_SQL, {"nsp": nsp, "role": role, "limit": MAX_ROLE_TABLE_ROWS})
            for table, privilege in cursor:
                access.role_tables.setdefault(privilege, set()).add(table)
            names = [name for name in access.grantees if name != "PUBLIC"]
            if names:
                cursor.execute(MEMBERS_SQL, {"grantees": names, "limit": MAX_MEMBER_ROWS})
                access.members = [(via, member, bool(login)) for via, member, login in cursor]
        cursor.execute(SESSIONS_SQL, {"role": role, "limit": MAX_SESSIONS})
        access.sessions = [
            {"pid": pid, "user": user, "database": datname, "application": app, "client": client, "state": state,
             "since": since.isoformat() if isinstance(since, datetime) else None}
            for pid, user, datname, app, client, state, since in cursor
        ]
    return access
