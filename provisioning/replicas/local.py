"""The `local` replica driver: a streaming standby of a cluster on this host, by pg_basebackup.

A build lives in one deterministic folder per key (the request): CLUSTERS_DIR/replicas/<key>/
holding `data/` (the standby's data directory) and `replication.pgpass` (0600, the portal
replication role's password, which the standby's primary_conninfo points at). A retry of a
build first kills whatever process still works on that folder and removes it, so a worker
killed at any instant never leaves an orphan directory or a postmaster the portal doesn't know.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from audit.services import record
from portal.choices import InstanceKind, InstanceStatus
from portal.errors import Conflict
from portal.logging import redact_text
from portal.models import Instance
from provisioning import connections
from provisioning.clusters import (
    ClusterError,
    LocalCluster,
    _make_binaries_reachable,
    _make_dir_reachable,
    ensure_service_user,
    free_port,
)
from provisioning.errors import TransientTargetError
from provisioning.models import ReplicationCredential
from provisioning.replicas.base import ReplicaDriver, ReplicaState, StepCallback, register
from provisioning.secrets import scram_verifier

log = structlog.get_logger(__name__)

# The portal's own replication role: the only role that ever gets REPLICATION.
REPLICATION_ROLE = "dbportal_replication"
HBA_LINE = f"host replication {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256"
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Advisory-lock namespace on a primary while its replication role is created or changed.
_ROLE_LOCK = 0x64627270  # "dbrp"
# What libpq / the server say through pg_basebackup when the primary is down or not accepting
# connections yet: the build is retried later. Refusals (authentication, pg_hba.conf, privileges)
# say so first and stay permanent: waiting does not change them.
_BASEBACKUP_TRANSIENT = (
    "connection refused", "could not connect to server", "timeout expired", "connection reset by peer",
    "server closed the connection unexpectedly", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "too many connections", "remaining connection slots are reserved",
)
_BASEBACKUP_PERMANENT = (
    "password authentication failed", "no pg_hba.conf entry", "pg_hba.conf rejects", "permission denied",
    "must be superuser", "must have", "does not exist", "no password supplied",
)


def basebackup_error(output: str) -> Exception:
    """The error for a failed pg_basebackup: transient when the primary could not be reached."""
    message = f"pg_basebackup failed: {redact_text(output)}"
    lowered = output.lower()
    if any(m in lowered for m in _BASEBACKUP_TRANSIENT) and not any(m in lowered for m in _BASEBACKUP_PERMANENT):
        return TransientTargetError(message)
    return ClusterError(message)


def replicas_root() -> Path:
    return Path(settings.CLUSTERS_DIR) / "replicas"


def build_dir(key: str) -> Path:
    if not _KEY.match(key):
        raise ValueError(f"bad replica build key {key!r}")
    return replicas_root() / key


def processes_using(path: Path) -> list[int]:
    """Pids whose command line names `path` or something inside it (pg_basebackup -D, postgres -D, runuser)."""
    target = str(path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            args = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            text = arg.decode(errors="replace")
            if text == target or text.startswith(target + "/"):
                found.append(int(entry))
                break
    return found


def _kill_and_wait(pids: list[int], timeout: float = 10) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path("/proc", str(pid)).exists() and time.monotonic() < deadline:
            # A zombie of ours must be reaped; anyone else's is reaped by its parent or init.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            try:
                state = Path("/proc", str(pid), "stat").read_text().split(") ", 1)[1][0]
            except (OSError, IndexError):
                break
            if state == "Z":
                break
            time.sleep(0.02)


def _chown_service(path: Path) -> None:
    user = ensure_service_user()
    if user:
        info = pwd.getpwnam(user)
        os.chown(path, info.pw_uid, info.pw_gid)


@register(InstanceKind.LOCAL)
class LocalReplicaDriver(ReplicaDriver):
    """pg_basebackup -R -X stream -c fast from a local primary, pg_ctl start on a free port."""

    # -- the plan -------------------------------------------------------------------------
    def describe(self, *, name: str) -> list[tuple[str, sql.Composable]]:
        role = sql.Identifier(REPLICATION_ROLE)
        replica = sql.Identifier(name)
        return [
            ("role", sql.SQL(
                "-- ensure the portal's replication role {role} on the primary: LOGIN REPLICATION, no other "
                "attribute, a generated password kept encrypted by the portal (never shown)").format(role=role)),
            ("hba", sql.SQL(
                "-- pg_hba.conf of the primary: {line}, then reload").format(line=sql.Literal(HBA_LINE))),
            ("register", sql.SQL(
                "-- register instance {replica} (kind local, status provisioning) as a replica of the primary, "
                "on a free port of 127.0.0.1, with the primary's admin credentials").format(replica=replica)),
            ("backup", sql.SQL(
                "-- pg_basebackup -D <clusters>/replicas/<request>/data -R -X stream -c fast "
                "from the primary as {role}").format(role=role)),
            ("start", sql.SQL(
                "-- pg_ctl start {replica} as a hot standby and wait until it accepts connections").format(
                replica=replica)),
            ("catch_up", sql.SQL(
                "-- wait until {replica} streams and has replayed up to the primary's pg_current_wal_lsn()").format(
                replica=replica)),
            ("ready", sql.SQL("-- mark {replica} reachable: read-only, lag recorded by the health job").format(
                replica=replica)),
        ]

    # -- building -------------------------------------------------------------------------
    def create(self, *, primary: Any, name: str, key: str, actor: Any = None, request_id: int | None = None,
               on_step: StepCallback | None = None) -> Any:
        folder = build_dir(key)
        data_dir = folder / "data"

        def step(step_key: str, started: float, action: str, details: dict[str, Any], replica: Any = None) -> None:
            ms = (time.monotonic() - started) * 1000
            record(action, actor=actor, object_type="instance", object_id=getattr(replica, "pk", "") or "",
                   instance=replica or primary, request_id=request_id, outcome="ok",
                   details={"replica": name, "primary": primary.name, "step": step_key, "ms": round(ms, 1), **details})
            if on_step:
                on_step(step_key, ms, details)

        existing = Instance.objects.filter(name=name).first()
        if existing is not None and (existing.replica_of_id != primary.pk or existing.data_dir != str(data_dir)):
            raise Conflict(f"an instance named {name} exists and is not this build's replica",
                           errors={"payload.name": ["an instance with this name exists"]})
        if existing is not None and existing.status not in (InstanceStatus.PROVISIONING,):
            # An earlier try finished (the worker died after registering it): nothing left to do.
            return existing

        # Whatever an earlier, killed try left behind goes first: processes, then the folder.
        self._clean_folder(folder, primary=primary, name=name, actor=actor, request_id=request_id)

        started = time.monotonic()
        password = self._ensure_replication_role(primary)
        step("role", started, "replica.role_ensured", {"role": REPLICATION_ROLE})

        started = time.monotonic()
        primary_cluster = LocalCluster(data_dir=Path(primary.data_dir), port=primary.port)
        primary_cluster.hba_add(HBA_LINE)
        if primary_cluster.is_running():
            # hba_add reloads only when it changed the file; make sure the running server read it.
            primary_cluster.reload()
        step("hba", started, "replica.hba_configured", {"line": HBA_LINE})

        started = time.monotonic()
        replica = self._register(primary=primary, name=name, data_dir=data_dir, existing=existing)
        step("register", started, "replica.registered", {"port": replica.port, "data_dir": str(data_dir)},
             replica=replica)

        started = time.monotonic()
        self._basebackup(primary=primary, name=name, folder=folder, data_dir=data_dir, password=password)
        step("backup", started, "replica.backup_taken", {"data_dir": str(data_dir)}, replica=replica)

        started = time.monotonic()
        standby = LocalCluster(data_dir=data_dir, port=replica.port)
        standby.start(timeout=120)
        standby.wait_ready(timeout=60)
        step("start", started, "replica.started", {"port": replica.port, "pid": standby.postmaster_pid()},
             replica=replica)

        started = time.monotonic()
        target_lsn = self.wait_caught_up(primary=primary, standby=standby, name=name)
        step("catch_up", started, "replica.caught_up", {"lsn": target_lsn}, replica=replica)

        started = time.monotonic()
        with psycopg.connect(standby.socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
            version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        with transaction.atomic():
            replica.status = InstanceStatus.REACHABLE
            replica.status_detail = ""
            replica.server_version = version
            replica.replica_lag_bytes = 0
            replica.replica_lag_seconds = 0.0
            replica.checked_at = timezone.now()
            replica.save(update_fields=["status", "status_detail", "server_version", "replica_lag_bytes",
                                        "replica_lag_seconds", "checked_at"])
            step("ready", started, "replica.created", {"port": replica.port, "server_version": version},
                 replica=replica)
        return replica

    def abandon(self, *, primary: Any, name: str, key: str, actor: Any = None, request_id: int | None = None) -> None:
        folder = build_dir(key)
        self._clean_folder(folder, primary=primary, name=name, actor=actor, request_id=request_id)
        with transaction.atomic():
            deleted, _ = Instance.objects.filter(
                name=name, replica_of=primary, status=InstanceStatus.PROVISIONING, data_dir=str(folder / "data")
            ).delete()
            if deleted:
                record("replica.build_abandoned", actor=actor, object_type="instance", instance=primary,
                       request_id=request_id, outcome="removed", details={"replica": name, "primary": primary.name})

    def _clean_folder(self, folder: Path, *, primary: Any, name: str, actor: Any, request_id: int | None) -> None:
        if not folder.exists() and not processes_using(folder):
            return
        standby = LocalCluster(data_dir=folder / "data", port=0)
        if standby.is_running():
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                standby.stop(mode="immediate", timeout=20)
        pids = processes_using(folder)
        _kill_and_wait(pids)
        shutil.rmtree(folder, ignore_errors=True)
        record("replica.leftovers_removed", actor=actor, object_type="instance", instance=primary,
               request_id=request_id, outcome="removed",
               details={"replica": name, "folder": str(folder), "killed_pids": pids})

    def _ensure_replication_role(self, primary: Any) -> str:
        """Create or align the replication role on the primary; return its password (kept encrypted)."""
        with transaction.atomic():
            credential = ReplicationCredential.objects.select_for_update().filter(instance=primary).first()
            if credential is None:
                credential = ReplicationCredential(instance=primary, role=REPLICATION_ROLE)
                credential.password = secrets.token_urlsafe(32)
                credential.save()
        password = credential.password
        attributes = sql.SQL("LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS "
                             "CONNECTION LIMIT 32 PASSWORD {}").format(sql.Literal(scram_verifier(password)))
        role = sql.Identifier(REPLICATION_ROLE)
        with connections.connect(primary) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_ROLE_LOCK,))
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,)).fetchone()
            verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
            conn.execute(sql.SQL("{} {} WITH {}").format(verb, role, attributes))
        return password

    def _register(self, *, primary: Any, name: str, data_dir: Path, existing: Any) -> Any:
        with transaction.atomic():
            if existing is not None:
                replica = Instance.objects.select_for_update().get(pk=existing.pk)
                if not _port_free(replica.port):
                    replica.port = free_port()
                    replica.save(update_fields=["port"])
                return replica
            replica = Instance(
                name=name, environment=primary.environment, kind=InstanceKind.LOCAL, host="127.0.0.1",
                port=free_port(), database=primary.database, admin_user=primary.admin_user,
                replica_of=primary, data_dir=str(data_dir), status=InstanceStatus.PROVISIONING,
                status_detail="building", server_version=primary.server_version,
            )
            # pg_basebackup copies every role, so the primary's admin credentials work on the standby.
            replica.admin_password = primary.admin_password
            replica.save()
        return replica

    def _basebackup(self, *, primary: Any, name: str, folder: Path, data_dir: Path, password: str) -> None:
        bin_dir = LocalCluster(data_dir=data_dir, port=0).bin_dir
        assert bin_dir is not None
        _make_binaries_reachable(bin_dir)
        replicas_root().mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        data_dir.mkdir(mode=0o700)
        passfile = folder / "replication.pgpass"
        # Written before chown so that nobody else can ever read it; libpq wants 0600.
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"127.0.0.1:{int(primary.port)}:*:{REPLICATION_ROLE}:{password}\n")
        for path in (folder, data_dir, passfile):
            _chown_service(path)
        _make_dir_reachable(data_dir)
        conninfo = psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=str(int(primary.port)), user=REPLICATION_ROLE, application_name=name,
            connect_timeout="10",
        )
        args = [str(bin_dir / "pg_basebackup"), "-D", str(data_dir), "-R", "-X", "stream", "-c", "fast",
                "-d", conninfo, "--no-password"]
        if settings.REPLICA_BACKUP_MAX_RATE:
            args += ["-r", str(settings.REPLICA_BACKUP_MAX_RATE)]
        user = ensure_service_user()
        cmd = (["runuser", "-u", user, "--"] if user else []) + args
        # The password travels only in the passfile; -R makes the standby's primary_conninfo name it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(passfile)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=settings.REPLICA_BUILD_TIMEOUT)
        if proc.returncode != 0:
            raise basebackup_error(proc.stderr.strip() or proc.stdout.strip())

    def wait_caught_up(self, *, primary: Any, standby: LocalCluster, name: str, timeout: float = 120) -> str:
        """Wait until the standby streams and has replayed up to the primary's current WAL position."""
        with connections.connect(primary, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(standby.socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
            while True:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn, "
                    "EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
                    (target,),
                ).fetchone()
                if row[0] and row[1]:
                    return str(target)
                if time.monotonic() > deadline:
                    raise ClusterError(f"standby {name} did not catch up with the primary within {timeout:.0f} s")
                time.sleep(0.01)

    # -- watching, promoting, removing ----------------------------------------------------
    def status(self, replica: Any) -> ReplicaState:
        standby = LocalCluster(data_dir=Path(replica.data_dir), port=replica.port)
        if not standby.is_running():
            return ReplicaState(InstanceStatus.UNHEALTHY, "the standby's postmaster is not running")
        try:
            with connections.connect(replica, autocommit=True, connect_timeout=3, statement_timeout_ms=5000) as conn:
                in_recovery, replay_lsn, version, seconds = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, current_setting('server_version'), "
                    "CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() "
                    "THEN 0 ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
                ).fetchone()
        except psycopg.Error as exc:
            return ReplicaState(InstanceStatus.UNHEALTHY, f"standby: {connections.describe_error(exc)}")
        if not in_recovery:
            return ReplicaState(InstanceStatus.UNHEALTHY, "not in recovery: promoted outside the portal?",
                                server_version=version)
        lag_seconds = max(float(seconds), 0.0)
        primary = replica.replica_of
        try:
            with connections.connect(primary, autocommit=True, connect_timeout=3, statement_timeout_ms=5000) as conn:
                row = conn.execute(
                    "SELECT state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
                    "FROM pg_stat_replication WHERE application_name = %s ORDER BY backend_start DESC LIMIT 1",
                    (replica.name,),
                ).fetchone()
                if row is None:
                    behind = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint",
                                          (replay_lsn,)).fetchone()[0]
        except psycopg.Error as exc:
            return ReplicaState(InstanceStatus.UNHEALTHY, f"primary: {connections.describe_error(exc)}",
                                lag_seconds=lag_seconds, server_version=version)
        if row is None or row[0] != "streaming":
            return ReplicaState(InstanceStatus.UNHEALTHY,
                                f"not streaming from {primary.name} ({row[0] if row else 'no WAL sender'})",
                                lag_bytes=max(int(behind if row is None else row[1] or 0), 0),
                                lag_seconds=lag_seconds, server_version=version)
        lag_bytes = max(int(row[1] or 0), 0)
        if lag_bytes > settings.REPLICA_MAX_LAG_BYTES:
            return ReplicaState(InstanceStatus.UNHEALTHY, f"{lag_bytes} bytes behind {primary.name}",
                                lag_bytes=lag_bytes, lag_seconds=lag_seconds, server_version=version)
        return ReplicaState(InstanceStatus.REACHABLE, "streaming", lag_bytes=lag_bytes, lag_seconds=lag_seconds,
                            server_version=version)

    def promote(self, replica: Any) -> None:
        standby = LocalCluster(data_dir=Path(replica.data_dir), port=replica.port)
        if not standby.is_running():
            standby.start(timeout=120)
        with psycopg.connect(standby.socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                standby.promote()
            deadline = time.monotonic() + 60
            while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise ClusterError(f"{replica.name} is still in recovery 60 s after pg_ctl promote")
                time.sleep(0.01)

    def destroy(self, replica: Any) -> None:
        data_dir = Path(replica.data_dir)
        standby = LocalCluster(data_dir=data_dir, port=replica.port)
        with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
            standby.stop(mode="fast", timeout=30)
        # The build folder (data + passfile) when the replica was made here; else just its data.
        folder = data_dir.parent if data_dir.parent.parent == replicas_root() else data_dir
        _kill_and_wait(processes_using(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
