"""Physical backups of `local` instances: continuous WAL archiving plus pg_basebackup.

Why archive_command and not pg_receivewal: the archiver is part of the postmaster, so it runs
exactly as long as the cluster does, retries a failed copy by itself and never drops a segment
(a segment is recycled only after the command succeeded); pg_receivewal would be one more
long-lived process per instance for the portal to supervise, restart and keep in step with
the workers, outside Celery's model of short tasks. The command copies to `<segment>.part`
and renames, so a segment in the archive is always whole; it refuses to overwrite one.

The archive of a cluster is keyed by its system identifier: a cluster re-created under the same
name never mixes its WAL with the old one's. `archive_timeout` (PORTAL_BACKUP_ARCHIVE_TIMEOUT)
switches segments on an idle cluster, which bounds the restore point's lag.

Everything runs as the service user the clusters run as (provisioning/clusters.py), over the
cluster's unix socket as its superuser (trust, local only): no password anywhere.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from psycopg import sql

from provisioning.backups.storage import instance_prefix, storage
from provisioning.backups.tools import DATABASES_SQL, BackupError, count_rows, run, sha256_file, tool
from provisioning.clusters import LocalCluster, _make_dir_reachable, ensure_service_user

# The archive command goes through a shell: the folder may hold only these characters.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
_LABEL_START = re.compile(r"^START WAL LOCATION: (\S+) \(file (\S+)\)$", re.M)


@dataclass
class PhysicalResult:
    key: str
    size_bytes: int
    wal_start: str
    wal_end: str
    wal_start_file: str
    checksum: str
    verify_output: str
    databases: list[str]
    row_counts: dict[str, Any] = field(default_factory=dict)


def cluster_of(instance) -> LocalCluster:
    if not instance.data_dir:
        raise BackupError(f"instance {instance.name} has no data directory: not a local cluster")
    return LocalCluster(data_dir=Path(instance.data_dir), port=int(instance.port))


def _service_owned_dir(path: Path) -> Path:
    """mkdir -p, each folder from the backup root down owned by the service user, 0700."""
    path.mkdir(parents=True, exist_ok=True)
    user = ensure_service_user()
    root = Path(settings.BACKUP_ROOT)
    if user:
        info = pwd.getpwnam(user)
        for folder in [path, *path.parents]:
            if folder == root.parent or root not in [folder, *folder.parents]:
                break
            os.chown(folder, info.pw_uid, info.pw_gid)
            folder.chmod(0o700)
        _make_dir_reachable(root)
    return path


def system_identifier(cluster: LocalCluster) -> str:
    with psycopg.connect(cluster.socket_conninfo(), connect_timeout=5) as conn:
        return str(conn.execute("SELECT system_identifier FROM pg_catalog.pg_control_system()").fetchone()[0])


def wal_key(instance, system_id: str) -> str:
    return f"{instance_prefix(instance)}/wal/{system_id}"


def archive_command(folder: Path) -> str:
    if not _SAFE_PATH.match(str(folder)):
        raise BackupError(f"the WAL archive folder {folder} holds characters unsafe in a shell command")
    return f"test ! -f {folder}/%f && cp %p {folder}/%f.part && mv {folder}/%f.part {folder}/%f"


def ensure_archiving(instance) -> dict[str, Any]:
    """WAL archiving on: archive_mode, archive_command into the backup root, archive_timeout.

    archive_mode needs a restart: the first time only, the cluster is restarted (fast mode).
    Returns what was changed (for the audit event).
    """
    cluster = cluster_of(instance)
    system_id = system_identifier(cluster)
    folder = _service_owned_dir(storage().path(wal_key(instance, system_id)))
    wanted = {"archive_mode": "on", "archive_command": archive_command(folder),
              "archive_timeout": str(int(settings.BACKUP_ARCHIVE_TIMEOUT))}
    changed: dict[str, str] = {}
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
        current = dict(conn.execute("SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                                    [list(wanted)]).fetchall())
        for name, value in wanted.items():
            if current.get(name) != value:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                changed[name] = value
        conn.execute("SELECT pg_catalog.pg_reload_conf()")
    restarted = "archive_mode" in changed
    if restarted:
        cluster.stop(mode="fast")
        cluster.start()
        cluster.wait_ready()
    return {"changed": sorted(changed), "restarted": restarted, "archive": str(folder)}


def archive_folder(instance) -> Path:
    return storage().path(wal_key(instance, system_identifier(cluster_of(instance))))


def switch_wal(instance) -> str:
    """Close the current WAL segment so the archiver copies it now; its file name."""
    with psycopg.connect(cluster_of(instance).socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())").fetchone()[0]


def verify(folder: Path) -> str:
    """pg_verifybackup: every file against the manifest's checksums, and the WAL it needs."""
    return run([tool("pg_verifybackup"), str(folder)], as_service=True).strip()


def backup_key(instance, backup_id: int) -> str:
    return f"{instance_prefix(instance)}/base/{int(backup_id)}"


def take(instance, backup_id: int) -> PhysicalResult:
    """pg_basebackup -Fp -X stream -c fast with a SHA-256 manifest, then verify and count rows."""
    cluster = cluster_of(instance)
    key = backup_key(instance, backup_id)
    dest = storage().path(key)
    # A folder under this id is a leftover of a killed try of this very backup row.
    shutil.rmtree(dest, ignore_errors=True)
    _service_owned_dir(dest.parent)
    args = [tool("pg_basebackup"), "-d", cluster.socket_conninfo(), "-D", str(dest), "-Fp", "-X", "stream",
            "-c", "fast", "--no-password", "-l", f"dbportal backup {int(backup_id)}"]
    if settings.BACKUP_MAX_RATE:
        args += ["-r", settings.BACKUP_MAX_RATE]
    run(args, as_service=True)
    manifest_path = dest / "backup_manifest"
    manifest = json.loads(manifest_path.read_text())
    ranges = manifest.get("WAL-Ranges") or [{}]
    label = _LABEL_START.search((dest / "backup_label").read_text())
    # pg_verifybackup reads the copy while the row counts read the cluster: two processes,
    # overlapped; the backup is reported good only once both are done (the verification first).
    with ThreadPoolExecutor(max_workers=1) as pool:
        verification = pool.submit(verify, dest)
        databases, counts = [], {}
        with psycopg.connect(cluster.socket_conninfo(), connect_timeout=5) as conn:
            databases = [row[0] for row in conn.execute(DATABASES_SQL).fetchall()]
        for database in databases:
            with psycopg.connect(cluster.socket_conninfo(database), connect_timeout=5, autocommit=True) as conn:
                counts[database] = count_rows(conn)
        verify_output = verification.result()
    return PhysicalResult(
        key=key, size_bytes=storage().size(key), wal_start=ranges[0].get("Start-LSN", ""),
        wal_end=ranges[-1].get("End-LSN", ""), wal_start_file=label.group(2) if label else "",
        checksum=sha256_file(manifest_path), verify_output=verify_output[-2000:], databases=databases,
        row_counts=counts)
