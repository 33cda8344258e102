"""Logical backups of `external` instances: pg_dump -Fc per database, globals without passwords.

The instance's admin login is used (the same credentials the portal applies plans with), its
password only in a PGPASSFILE (mode 0600, removed afterwards; provisioning/backups/tools.py).
Dumps are named by position (`001.dump`), not by database name: a name may hold any character.
`dbportal-manifest.json` maps names to files and holds every file's SHA-256; the backup's
checksum is the manifest's own SHA-256. Verification re-hashes every file and has pg_restore
read each archive's table of contents (a truncated or corrupted archive fails there).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from provisioning import connections
from provisioning.backups.storage import instance_prefix, storage
from provisioning.backups.tools import DATABASES_SQL, BackupError, count_rows, passfile, run, sha256_file, tool

MANIFEST = "dbportal-manifest.json"
GLOBALS = "globals.sql"


@dataclass
class LogicalResult:
    key: str
    size_bytes: int
    checksum: str
    verify_output: str
    databases: list[str]
    row_counts: dict[str, Any] = field(default_factory=dict)


def _conninfo(instance, database: str) -> str:
    return make_conninfo(host=instance.host, port=str(instance.port), user=instance.admin_user, dbname=database,
                         sslmode="prefer")


def verify(folder: Path) -> str:
    """Every file against the manifest's sums, then pg_restore --list of each dump."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"the manifest cannot be read: {exc}") from None
    lines = []
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise BackupError(f"{name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BackupError(f"{name}: checksum mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")
        if name.endswith(".dump"):
            toc = run([tool("pg_restore"), "--list", str(path)])
            lines.append(f"{name}: {sum(1 for line in toc.splitlines() if line and not line.startswith(';'))} entries")
    lines.append(f"{len(manifest['files'])} files match the manifest")
    return "\n".join(lines)


def backup_key(instance, backup_id: int) -> str:
    return f"{instance_prefix(instance)}/logical/{int(backup_id)}"


def take(instance, backup_id: int) -> LogicalResult:
    key = backup_key(instance, backup_id)
    dest = storage().path(key)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, mode=0o700)
    with connections.connect(instance, autocommit=True) as conn:
        databases = [row[0] for row in conn.execute(DATABASES_SQL).fetchall()]
    files: dict[str, str] = {}
    mapping: dict[str, str] = {}
    with passfile(instance.host, int(instance.port), instance.admin_user, instance.admin_password) as env:
        run([tool("pg_dumpall"), "--globals-only", "--no-role-passwords", "--no-password",
             "-d", _conninfo(instance, instance.database), "-f", str(dest / GLOBALS)], env=env)
        for position, database in enumerate(databases, start=1):
            name = f"{position:03d}.dump"
            run([tool("pg_dump"), "-Fc", "--no-password", "-d", _conninfo(instance, database),
                 "-f", str(dest / name)], env=env)
            mapping[database] = name
    for path in sorted(dest.iterdir()):
        files[path.name] = sha256_file(path)
    body = json.dumps({"format": 1, "databases": mapping, "files": files}, indent=1, sort_keys=True).encode()
    (dest / MANIFEST).write_bytes(body)
    verify_output = verify(dest)
    counts = {}
    for database in databases:
        with connections.connect(instance, database, autocommit=True, statement_timeout_ms=600_000) as conn:
            counts[database] = count_rows(conn)
    return LogicalResult(key=key, size_bytes=storage().size(key), checksum=hashlib.sha256(body).hexdigest(),
                         verify_output=verify_output[-2000:], databases=databases, row_counts=counts)
