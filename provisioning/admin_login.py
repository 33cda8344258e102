"""What an instance's admin login must hold, read once at registration: the one place where
PostgreSQL versions differ for the portal's own (rendered) SQL.

The admin login is a superuser, or a least-privilege login with exactly:

- LOGIN, CREATEROLE and INHERIT (the default) — no SUPERUSER, CREATEDB, REPLICATION, BYPASSRLS;
- membership in `pg_signal_backend`, so a revoke or an expiry can end the role's open sessions
  (pg_terminate_backend otherwise needs the privileges of the session's role);
- CONNECT and CREATE on every database it manages (CREATE SCHEMA, and the portal's own
  `dbportal_meta.applied_change` marker table), the maintenance database included (role plans
  run there). Databases without both are not managed: the inventory, drift scan and
  entitlements leave them out (`MANAGED_DATABASE`).

What the versions change, and how the plans cope with both:

- PostgreSQL 15: CREATEROLE may create, alter, drop and grant any role that is not a superuser,
  but the creator is no member of the roles it creates. PostgreSQL 16 and later: CREATEROLE
  reaches only roles on which the login holds ADMIN OPTION; a role it creates is granted to it
  WITH ADMIN OPTION but, unless `createrole_self_grant` says otherwise, without INHERIT and SET.
- Either way the admin cannot yet `CREATE SCHEMA … AUTHORIZATION <owner>` (needs SET ROLE owner),
  `ALTER DEFAULT PRIVILEGES FOR ROLE <owner>` (the same), nor GRANT on tables the owner owns
  (needs the owner's privileges, i.e. INHERIT). So the schema plan grants each owner role it
  uses to CURRENT_USER when the admin is not a superuser: `GRANT <owner> TO CURRENT_USER` is
  the same text on both versions (the plan step lives in provisioning/plans/schema.py), and gives SET and INHERIT on both as long as the admin login
  has the INHERIT attribute (on 16 the INHERIT option defaults to it; on 15 membership inherits
  through it) — hence INHERIT is required here rather than spelled `WITH INHERIT TRUE, SET TRUE`,
  which 15 cannot parse.
- On 16 the ADMIN OPTION that lets the admin grant an owner role (to itself, to a team's roles
  through `IN ROLE`, to an executor login) exists only for roles this admin created: roles made
  outside the portal cannot be reused on 16 by a non-superuser admin (validation only lets a
  team reuse roles the portal created).

Read replicas of `local` instances need REPLICATION and a superuser's data directory: they are
out of scope for a least-privilege admin (local instances are always created with a superuser).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

# The first version whose CREATEROLE follows the ADMIN OPTION rules.
PG16 = 160000
# The oldest version the least-privilege admin is documented and tested for.
MIN_VERSION_NUM = 150000

# A database the portal manages: it may connect to it and create schemas in it. Used by the
# inventory and the catalog reads so that they agree; always true for a superuser.
MANAGED_DATABASE = sql.SQL(
    "datallowconn AND NOT datistemplate"
    " AND has_database_privilege(datname, 'CONNECT') AND has_database_privilege(datname, 'CREATE')"
)

PROBE_SQL = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       r.rolsuper, r.rolcreaterole, r.rolinherit,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),
       has_database_privilege(current_database(), 'CREATE'),
       -- a marker table made by another admin (a superuser before) must be this login's to use and
       -- to share with the executor logins
       -- (read from the catalog: to_regclass itself fails without USAGE on the schema)
       CASE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'dbportal_meta') THEN true
            ELSE has_schema_privilege('dbportal_meta', 'USAGE')
                 AND coalesce((SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c
                                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = 'dbportal_meta' AND c.relname = 'applied_change'), true) END
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class AdminLogin:
    """What the probe read about the admin login on one server."""

    user: str
    database: str
    server_version: str
    version_num: int
    superuser: bool
    createrole: bool
    inherit: bool
    signal_backend: bool
    create_on_database: bool
    owns_marker_table: bool = True
    missing: list[str] = field(default_factory=list)


def read(conn: psycopg.Connection, *, user: str, database: str) -> AdminLogin:
    """Read the admin login's attributes on the connected server and list what it lacks."""
    row = conn.execute(PROBE_SQL).fetchone()
    if row is None:  # current_user always has a pg_roles row; defensive
        raise psycopg.ProgrammingError("the admin login is not in pg_roles")
    version, version_num, is_super, createrole, inherit, signal_backend, create_db, owns_markers = row
    login = AdminLogin(user=user, database=database, server_version=str(version), version_num=int(version_num),
                       superuser=bool(is_super), createrole=bool(createrole), inherit=bool(inherit),
                       signal_backend=bool(signal_backend), create_on_database=bool(create_db),
                       owns_marker_table=bool(owns_markers))
    return AdminLogin(**{**login.__dict__, "missing": missing(login)})


def missing(login: AdminLogin) -> list[str]:
    """What a non-superuser admin login lacks, one sentence each, naming the SQL that fixes it."""
    if login.superuser:
        return []
    role = sql.Identifier(login.user).as_string(None)
    database = sql.Identifier(login.database).as_string(None)
    problems = []
    if login.version_num < MIN_VERSION_NUM:
        problems.append(f"a non-superuser admin login needs PostgreSQL 15 or later (server: {login.server_version})")
    if not login.createrole:
        problems.append(f"must be a superuser or have CREATEROLE (ALTER ROLE {role} CREATEROLE)")
    if not login.inherit:
        problems.append(f"must have INHERIT to use the privileges of the owner roles it creates "
                        f"(ALTER ROLE {role} INHERIT)")
    if not login.signal_backend:
        problems.append(f"must be a member of pg_signal_backend to end a revoked role's sessions "
                        f"(GRANT pg_signal_backend TO {role})")
    if not login.create_on_database:
        problems.append(f"must have CREATE on the maintenance database {database} for the portal's marker table "
                        f"(GRANT CREATE ON DATABASE {database} TO {role})")
    if not login.owns_marker_table:
        problems.append(f"the portal's marker table in {database} was made by another login (an earlier admin); "
                        f"hand it over as a superuser: ALTER SCHEMA dbportal_meta OWNER TO {role}; "
                        f"ALTER TABLE dbportal_meta.applied_change OWNER TO {role}")
    return problems


def setup_statements(admin: str, *, password: str | None, databases: list[str]) -> list[sql.Composed]:
    """The SQL a superuser runs once to create a least-privilege admin login (15 and 16 alike);
    README.md shows the same statements and the tests create their admin logins with them."""
    role = sql.Identifier(admin)
    statements = [
        sql.SQL("CREATE ROLE {role} LOGIN CREATEROLE INHERIT NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS"
                " PASSWORD {password}").format(
            role=role, password=sql.Literal(password) if password is not None else sql.SQL("NULL")),
        sql.SQL("GRANT pg_signal_backend TO {role}").format(role=role),
    ]
    statements += [sql.SQL("GRANT CONNECT, CREATE ON DATABASE {db} TO {role}").format(db=sql.Identifier(db), role=role)
                   for db in databases]
    return statements
