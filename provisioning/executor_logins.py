"""Executor logins: the only sessions that run SQL a requester wrote (DDL and its dry runs).

The instance's admin login runs only SQL the portal renders itself. Requester SQL runs over a
connection that logs in as a per-team, per-instance role this module creates and keeps:

    LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS NOINHERIT
    member (SET, no INHERIT) of exactly the team's schema owner roles on the instance
    USAGE on dbportal_meta, SELECT and INSERT on dbportal_meta.applied_change (its markers)

Nothing else: no predefined `pg_*` role, not the admin login. `SET ROLE`, `RESET ROLE`,
`set_config('role', …)` or `SET SESSION AUTHORIZATION` inside that session can only reach the
login itself (which holds no privilege of its own: NOINHERIT) or one of the team's owner roles,
so a reviewer's approval bounds both the statements and what they can touch. An owner role
that could itself reach a privileged role (a superuser, a role with CREATEROLE, CREATEDB,
REPLICATION or BYPASSRLS, a predefined role, the admin login) is never granted to the login.

The password is generated here, SCRAM-hashed before it leaves the portal, stored encrypted
like instance credentials, rotated by beat (PORTAL_EXECUTOR_LOGIN_ROTATE_DAYS) and on demand
(`manage.py executor_logins --rotate`); every creation, membership change and rotation is an
audit event. `ensure()` runs before every DDL apply and dry run and aligns the cluster with this
description, so an out-of-band change (an extra membership, a changed attribute) is undone.
"""

from __future__ import annotations

import contextlib
import secrets as pysecrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from psycopg import sql

from audit.services import record
from portal.models import ManagedSchema
from provisioning import connections
from provisioning.errors import PermanentTargetError
from provisioning.markers import INSTANCE_LOCK_NS, MARKER_DDL, marker_grants, portal_id
from provisioning.models import ExecutorLogin
from provisioning.secrets import scram_verifier

log = structlog.get_logger(__name__)

ROLE_PREFIX = "dbportal_exec_"
PASSWORD_BYTES = 32
CONNECTION_LIMIT = 8
ATTRIBUTES = sql.SQL("LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS NOINHERIT "
                     "CONNECTION LIMIT {}").format(sql.Literal(CONNECTION_LIMIT))

_ROLE_STATE = sql.SQL(
    "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls"
    " OR r.rolinherit OR NOT r.rolcanlogin OR r.rolconnlimit <> {limit},"
    " ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
    " WHERE m.member = r.oid ORDER BY 1),"
    " to_regclass('dbportal_meta.applied_change') IS NOT NULL,"
    " CASE WHEN to_regclass('dbportal_meta.applied_change') IS NOT NULL"
    " THEN has_schema_privilege(r.oid, 'dbportal_meta', 'USAGE')"
    " AND has_table_privilege(r.oid, 'dbportal_meta.applied_change', 'SELECT, INSERT') ELSE false END,"
    " has_database_privilege(r.oid, current_database(), 'CONNECT')"
    " FROM pg_roles r WHERE r.rolname = {role}"
)
# For each candidate owner role: the privileged roles it can reach through memberships (itself
# included). Any hit keeps it away from the executor login.
_OWNER_REACH = sql.SQL(
    "WITH RECURSIVE up(root, oid) AS ("
    " SELECT rolname::text, oid FROM pg_roles WHERE rolname = ANY({owners})"
    " UNION SELECT up.root, m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid)"
    " SELECT up.root, array_remove(array_agg(CASE WHEN r.rolsuper OR r.rolcreaterole OR r.rolcreatedb"
    " OR r.rolreplication OR r.rolbypassrls OR r.rolname LIKE 'pg\\_%' OR r.rolname LIKE {prefix}"
    " OR r.rolname = current_user THEN r.rolname::text END), NULL)"
    " FROM up JOIN pg_roles r ON r.oid = up.oid GROUP BY up.root"
)


def role_name(team_id: int) -> str:
    """The login's name on every instance: the portal's id keeps two portals sharing a cluster apart."""
    return f"{ROLE_PREFIX}{portal_id()[:12]}_{int(team_id)}"


def _row(instance: Any, team: Any) -> ExecutorLogin:
    login = ExecutorLogin.objects.filter(instance=instance, team=team).first()
    if login is not None:
        return login
    login = ExecutorLogin(instance=instance, team=team, role=role_name(team.pk))
    login.password = pysecrets.token_urlsafe(PASSWORD_BYTES)
    try:
        with transaction.atomic():
            login.save()
    except IntegrityError:  # another worker created it first: use theirs
        return ExecutorLogin.objects.get(instance=instance, team=team)
    return login


def _owner_roles(instance: Any, team: Any) -> list[str]:
    return sorted(set(ManagedSchema.objects.filter(instance=instance, team=team).values_list("owner_role", flat=True)))


def ensure(instance: Any, team: Any, database: str, *, owner_role: str | None = None) -> ExecutorLogin:
    """Create or align the team's executor login on `instance` (and its marker grants in `database`).

    `owner_role`: the role the plan will SET ROLE to; it must be one the login may reach, or the
    request fails here, before any of its SQL runs.
    """
    login = _row(instance, team)
    desired = _owner_roles(instance, team)
    role = sql.Identifier(login.role)
    changes: dict[str, Any] = {}
    with connections.connect(instance, database) as conn, conn.transaction():
        conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({}, {})").format(
            sql.Literal(INSTANCE_LOCK_NS), sql.Literal(int(instance.pk))))
        reach = {root: bad for root, bad in conn.execute(
            _OWNER_REACH.format(owners=sql.Literal(desired), prefix=sql.Literal(ROLE_PREFIX + "%"))).fetchall()}
        refused = {owner: reach[owner] for owner in desired if reach.get(owner)}
        allowed = [owner for owner in desired if owner in reach and owner not in refused]
        if refused:
            log.warning("executor_login.owner_refused", instance=instance.name, team=team.name, refused=refused)
        if owner_role is not None and owner_role not in allowed:
            why = (f"it can reach {', '.join(refused[owner_role])}" if owner_role in refused
                   else "it is not an owner role of the team on this instance")
            raise PermanentTargetError(f"requester SQL may not run as {owner_role}: {why}")
        role_state = _ROLE_STATE.format(limit=sql.Literal(CONNECTION_LIMIT), role=sql.Literal(login.role))
        state = conn.execute(role_state).fetchone()
        if state is None:
            conn.execute(sql.SQL("CREATE ROLE {} WITH {} PASSWORD {}").format(
                role, ATTRIBUTES, sql.Literal(scram_verifier(login.password))))
            changes["created"] = True
            members, marker_table, can_mark, can_connect = [], False, False, True
        else:
            wrong_attributes, members, marker_table, can_mark, can_connect = state
            if wrong_attributes:
                conn.execute(sql.SQL("ALTER ROLE {} WITH {}").format(role, ATTRIBUTES))
                changes["attributes_reset"] = True
            if login.synced_at is None:
                conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                    role, sql.Literal(scram_verifier(login.password))))
                changes["password_set"] = True
        granted = [owner for owner in allowed if owner not in members]
        revoked = [member for member in members if member not in allowed]
        for owner in granted:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), role))
        for member in revoked:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(member), role))
        if granted or revoked:
            changes.update(granted=granted, revoked=revoked)
        if not can_connect:
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role))
        if not marker_table:
            for statement in MARKER_DDL:
                conn.execute(statement)
        if not can_mark:
            for statement in marker_grants(login.role):
                conn.execute(statement)
    if changes or login.synced_at is None:
        with transaction.atomic():
            ExecutorLogin.objects.filter(pk=login.pk).update(synced_at=timezone.now())
            if changes:
                record("executor_login.changed" if "created" not in changes else "executor_login.created",
                       object_type="role", object_id=login.role, instance=instance, database=database,
                       outcome="success", details={"team": team.name, **changes})
        login.synced_at = timezone.now()
    return login


def rotate(login: ExecutorLogin, *, actor: Any = None) -> None:
    """A new password: stored first (marked unsynced), then set on the cluster, then marked synced.

    A connection opened in between with the old password fails authentication once and tries
    again with the stored one (see `connect`); an `ensure` in between sets the new one itself.
    """
    password = pysecrets.token_urlsafe(PASSWORD_BYTES)
    with transaction.atomic():
        login = ExecutorLogin.objects.select_for_update().select_related("instance", "team").get(pk=login.pk)
        login.password = password
        login.synced_at = None
        login.save(update_fields=["password_encrypted", "synced_at"])
    with connections.connect(login.instance) as conn, conn.transaction():
        exists = conn.execute(sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = {}").format(
            sql.Literal(login.role))).fetchone()
        if exists:
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                sql.Identifier(login.role), sql.Literal(scram_verifier(password))))
    with transaction.atomic():
        now = timezone.now()
        ExecutorLogin.objects.filter(pk=login.pk, synced_at__isnull=True).update(
            synced_at=now if exists else None, rotated_at=now)
        record("executor_login.rotated", actor=actor, object_type="role", object_id=login.role,
               instance=login.instance, outcome="success" if exists else "stored",
               details={"team": login.team.name, "on_cluster": bool(exists)})


def rotate_due(now: Any = None) -> int:
    """Rotate every login whose password is older than PORTAL_EXECUTOR_LOGIN_ROTATE_DAYS (a beat job)."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.EXECUTOR_LOGIN_ROTATE_DAYS)
    rotated = 0
    for login in ExecutorLogin.objects.select_related("instance", "team").filter(rotated_at__lte=cutoff):
        try:
            rotate(login)
            rotated += 1
        except psycopg.Error as exc:  # an unreachable instance waits for the next run
            log.warning("executor_login.rotate_failed", role=login.role, error=connections.describe_error(exc))
    return rotated


@contextlib.contextmanager
def connect(instance: Any, team: Any, database: str, *, owner_role: str, lock_timeout_ms: int,
            statement_timeout_ms: int, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A connection logged in as the team's executor login (ensured first, so it may SET ROLE
    `owner_role`), with the portal's application_name and timeouts."""
    login = ensure(instance, team, database, owner_role=owner_role)
    params = connections.conninfo(host=instance.host, port=instance.port, dbname=database, user=login.role,
                                  password=login.password)
    params["options"] = f"-c lock_timeout={int(lock_timeout_ms)} -c statement_timeout={int(statement_timeout_ms)}"
    try:
        conn = psycopg.connect(**params, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        if "password authentication failed" not in str(exc):
            raise
        # Rotated between our read and the connect: read the stored password again, once.
        login = ensure(instance, team, database, owner_role=owner_role)
        params["password"] = login.password
        conn = psycopg.connect(**params, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()
