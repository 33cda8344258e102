"""Instance writes: register an external cluster, create a local one, refresh status."""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any

import psycopg
import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from psycopg import sql

from audit.services import record
from portal.choices import Environment, InstanceKind, InstanceStatus
from portal.errors import InvalidPayload, TargetUnavailable
from portal.models import Instance
from portal.targets import literal_refusal, target_allowed
from provisioning import admin_login, connections
from provisioning.clusters import LocalCluster, free_port

log = structlog.get_logger(__name__)

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def validate_target(host: str, port: Any) -> None:
    if not host or not (_HOSTNAME.match(host) or _is_ip(host)):
        raise InvalidPayload.field("host", "must be a host name or an IP address")
    refusal = literal_refusal(host)
    if refusal:
        raise InvalidPayload.field("host", refusal)
    if not target_allowed(host):
        raise InvalidPayload.field("host", "this host is outside PORTAL_ALLOWED_TARGETS; ask an operator to allow it")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidPayload.field("port", "must be a port number from 1 to 65535")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def probe(*, host: str, port: int, database: str, admin_user: str, admin_password: str) -> str:
    """Connect once (5 s) and return the server version; refuse a login that cannot provision.

    A superuser passes; a least-privilege login must hold exactly what provisioning.admin_login
    documents, and is told at once (a 400 on `admin_user`) what it lacks, not at the first apply.
    """
    params = connections.conninfo(
        host=host, port=port, dbname=database, user=admin_user, password=admin_password, connect_timeout=5
    )
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            login = admin_login.read(conn, user=admin_user, database=database)
    except psycopg.Error as exc:
        raise TargetUnavailable(f"could not connect: {connections.describe_error(exc)}",
                                errors={"host": [connections.describe_error(exc)]}) from None
    if login.missing:
        raise TargetUnavailable(
            f"the admin user cannot provision: {login.missing[0]}", errors={"admin_user": login.missing},
        )
    return login.server_version


def instance_register(
    *,
    actor: Any,
    actor_ip: str | None = None,
    name: str,
    environment: str,
    host: str,
    port: int,
    database: str,
    admin_user: str,
    admin_password: str,
) -> Instance:
    """Register an external instance after one successful probe; nothing is stored on failure."""
    if Instance.objects.filter(name=name).exists():
        raise InvalidPayload.field("name", "an instance with this name exists")
    if environment not in Environment.values:
        raise InvalidPayload.field("environment", f"must be one of {', '.join(Environment.values)}")
    validate_target(host, port)
    version = probe(host=host, port=port, database=database, admin_user=admin_user, admin_password=admin_password)
    with transaction.atomic():
        instance = Instance(
            name=name, environment=environment, kind=InstanceKind.EXTERNAL, host=host, port=port,
            database=database, admin_user=admin_user, server_version=version,
            status=InstanceStatus.REACHABLE, checked_at=timezone.now(),
        )
        instance.admin_password = admin_password
        instance.save()
        record("instance.registered", actor=actor, actor_ip=actor_ip, object_type="instance",
               object_id=instance.pk, instance=instance, outcome="registered",
               details={"host": host, "port": port, "environment": environment, "kind": "external",
                        "server_version": version})
    return instance


def local_cluster_for(instance: Instance) -> LocalCluster:
    return LocalCluster(data_dir=instance.data_dir, port=instance.port)


def instance_create_local(
    *, actor: Any, name: str, environment: str = Environment.DEV, databases: tuple[str, ...] = (),
    actor_ip: str | None = None,
) -> Instance:
    """Create a PostgreSQL cluster on this host (initdb, scram on 127.0.0.1) and register it."""
    if Instance.objects.filter(name=name).exists():
        raise InvalidPayload.field("name", "an instance with this name exists")
    password = secrets.token_urlsafe(24)
    cluster = LocalCluster(data_dir=settings.CLUSTERS_DIR / name, port=free_port())
    cluster.initdb(auth_host="scram-sha-256", superuser_password=password)
    cluster.start()
    cluster.wait_ready()
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        for db in databases:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with transaction.atomic():
        instance = Instance(
            name=name, environment=environment, kind=InstanceKind.LOCAL, host="127.0.0.1", port=cluster.port,
            database="postgres", admin_user=cluster.superuser, server_version=version,
            data_dir=str(cluster.data_dir), status=InstanceStatus.REACHABLE, checked_at=timezone.now(),
        )
        instance.admin_password = password
        instance.save()
        record("instance.created", actor=actor, actor_ip=actor_ip, object_type="instance", object_id=instance.pk,
               instance=instance, outcome="created",
               details={"kind": "local", "port": cluster.port, "databases": list(databases),
                        "server_version": version})
    return instance


def local_instances_start() -> list[str]:
    """Start every local instance whose postmaster is down (after a reboot); returns their names.

    Primaries first, then their replicas (a standby wants its primary up to stream from).
    A replica still being built is left to the worker that retries its build.
    """
    started = []
    instances = (Instance.objects.filter(kind=InstanceKind.LOCAL)
                 .exclude(status__in=[InstanceStatus.RETIRED, InstanceStatus.PROVISIONING])
                 .order_by(F("replica_of").asc(nulls_first=True), "pk"))
    for instance in instances:
        cluster = local_cluster_for(instance)
        if not cluster.initialized:
            continue
        if not cluster.is_running():
            cluster.start()
            started.append(instance.name)
    return started


def instance_refresh_status(instance: Instance) -> Instance:
    """Probe an instance and record reachable / unreachable and its version (an audit event on change)."""
    previous = instance.status
    try:
        with connections.connect(instance, connect_timeout=3, statement_timeout_ms=5000) as conn:
            version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        instance.status = InstanceStatus.REACHABLE if instance.status != InstanceStatus.RETIRED else previous
        instance.server_version = version
        instance.status_detail = ""
    except psycopg.Error as exc:
        if instance.status != InstanceStatus.RETIRED:
            instance.status = InstanceStatus.UNREACHABLE
        instance.status_detail = connections.describe_error(exc)
    instance.checked_at = timezone.now()
    with transaction.atomic():
        instance.save(update_fields=["status", "server_version", "status_detail", "checked_at"])
        if previous != instance.status:
            record("instance.status_changed", object_type="instance", object_id=instance.pk, instance=instance,
                   outcome=instance.status, details={"from": previous, "to": instance.status,
                                                     "detail": instance.status_detail})
    return instance
