"""Backups and restore drills of the portal's own database (issue #20; docs/operations.md).

`portal_backup()` dumps the portal database (`pg_dump -Fc`, plus the globals without passwords)
into <backup root>/portal/<UTC time>/, in the logical format the instances' dumps use
(provisioning/backups/logical.py: a manifest with every file's SHA-256). Row counts are taken in
the very snapshot the dump reads (pg_dump --snapshot of a REPEATABLE READ transaction exported
by this process), so the drill compares them exactly.

`portal_restore_drill()` restores the newest (or a given) dump into a scratch local cluster,
checks the sums, every table, the row counts, and verifies the audit chain of the restored copy
(`manage.py audit_verify` pointed at it), then removes the cluster; it prints RTO.

Both run as the operator (manage.py), and both are audited in the portal's log (object type
`portal`): `backup.taken` / `backup.failed`, `backup.drill_passed` / `backup.drill_failed`.
The password of the portal database goes only into a PGPASSFILE (0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, transaction
from psycopg.conninfo import make_conninfo

from audit.services import record
from portal.conf import BASE_DIR
from provisioning.backups import drill as drill_engine
from provisioning.backups import logical
from provisioning.backups.storage import storage
from provisioning.backups.tools import BackupError, count_rows, passfile, run, sha256_file, tool
from provisioning.clusters import LocalCluster, socket_url

PREFIX = "portal"


def _database() -> dict[str, Any]:
    # What Django itself connects with (a unix socket folder for the embedded database included).
    params = connection.get_connection_params()
    return {"host": str(params.get("host") or ""), "port": int(params.get("port") or 5432),
            "user": str(params.get("user") or ""), "password": str(params.get("password") or ""),
            "dbname": str(params["dbname"])}


def _conninfo(db: dict[str, Any]) -> str:
    return make_conninfo(host=db["host"], port=str(db["port"]), user=db["user"], dbname=db["dbname"])


def portal_backup() -> dict[str, Any]:
    """Dump the portal database; returns what was written (folder, size, checksum, tables)."""
    db = _database()
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%Sz")
    key = f"{PREFIX}/{stamp}"
    dest = storage().path(key)
    started = datetime.now(UTC)
    try:
        dest.mkdir(parents=True, mode=0o700)
        with passfile(db["host"] or "localhost", db["port"], db["user"], db["password"]) as env, \
                psycopg.connect(_conninfo(db), password=db["password"] or None, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]
            counts = count_rows(conn)
            run([tool("pg_dump"), "-Fc", "--no-password", f"--snapshot={snapshot}", "-d", _conninfo(db),
                 "-f", str(dest / "001.dump")], env=env)
            conn.execute("COMMIT")
            try:
                run([tool("pg_dumpall"), "--globals-only", "--no-role-passwords", "--no-password",
                     "-d", _conninfo(db), "-f", str(dest / logical.GLOBALS)], env=env)
            except BackupError as exc:
                # A portal login without the right to read the roles: the dump is still whole.
                (dest / logical.GLOBALS).write_text(f"-- globals not dumped: {exc}\n")
        files = {path.name: sha256_file(path) for path in sorted(dest.iterdir())}
        body = json.dumps({"format": 1, "databases": {db["dbname"]: "001.dump"}, "files": files,
                           "row_counts": {db["dbname"]: counts}, "started_at": started.isoformat()},
                          indent=1, sort_keys=True).encode()
        (dest / logical.MANIFEST).write_bytes(body)
        logical.verify(dest)
    except (BackupError, psycopg.Error, OSError) as exc:
        storage().delete(key)
        with transaction.atomic():
            record("backup.failed", object_type="portal", object_id="portal-db", outcome="failed",
                   details={"key": key, "reason": str(exc)[:2000]})
        raise BackupError(str(exc)) from None
    result = {"key": key, "folder": str(dest), "size_bytes": storage().size(key),
              "checksum": hashlib.sha256(body).hexdigest(), "tables": len(counts)}
    with transaction.atomic():
        record("backup.taken", object_type="portal", object_id="portal-db", outcome="ok", details=result)
    return result


def newest_portal_backup() -> str | None:
    root = storage().path(PREFIX)
    if not root.is_dir():
        return None
    folders = sorted(p.name for p in root.iterdir() if (p / logical.MANIFEST).is_file())
    return f"{PREFIX}/{folders[-1]}" if folders else None


def _audit_chain_check(cluster: LocalCluster, dbname: str, result: Any) -> None:
    # The running portal's own audit configuration (keys, checkpoint folder), in the child's
    # environment only: the restored log must verify against what this portal signed.
    env = {**os.environ, "DATABASE_URL": socket_url(cluster.data_dir, cluster.port, dbname,
                                                    superuser=cluster.superuser),
           "PORTAL_AUDIT_KEYS": ",".join(settings.AUDIT_KEYS),
           "PORTAL_AUDIT_CHECKPOINT_DIR": str(settings.AUDIT_CHECKPOINT_DIR)}
    proc = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "audit_verify"], env=env,
                          capture_output=True, text=True, timeout=3600, cwd=str(BASE_DIR))
    output = (proc.stdout + proc.stderr).strip().splitlines()
    drill_engine.check(result, "audit_chain", proc.returncode == 0, "\n".join(output[-5:]))


def portal_restore_drill(key: str | None = None) -> dict[str, Any]:
    """Restore a portal dump into a scratch cluster and check it; returns the checks and RTO."""
    key = key or newest_portal_backup()
    if key is None:
        raise BackupError(f"no portal backup under {storage().path(PREFIX)}")
    folder = storage().path(key)
    manifest = json.loads((folder / logical.MANIFEST).read_text())
    dbname = next(iter(manifest["databases"]))
    backup = SimpleNamespace(key=key, row_counts=manifest.get("row_counts", {}),
                             started_at=datetime.fromisoformat(manifest["started_at"]))
    started = time.monotonic()
    result = drill_engine.drill_logical(
        drill_id=f"portal-{int(time.time())}", instance=None, backup=backup, target_time=None, check_queries=[],
        extra_checks=lambda cluster, res: _audit_chain_check(cluster, dbname, res))
    passed = result.ok and not result.error
    summary = {"key": key, "passed": passed, "rto_seconds": result.rto_seconds, "checks": result.checks,
               "seconds": round(time.monotonic() - started, 2), "error": result.error}
    with transaction.atomic():
        failed = [c["name"] for c in result.checks if not c["ok"]]
        record("backup.drill_passed" if passed else "backup.drill_failed", object_type="portal",
               object_id="portal-db", outcome="ok" if passed else "failed",
               details={"key": key, "rto_seconds": result.rto_seconds, "failed_checks": failed,
                        **({} if passed else {"reason": result.error or f"failed checks: {', '.join(failed)}"})})
    shutil.rmtree(drill_engine.scratch_dir("portal"), ignore_errors=True)
    return summary
