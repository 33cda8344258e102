"""Restore drills: a backup restored into a scratch local cluster, checked, timed and removed.

The scratch cluster lives under CLUSTERS_DIR/drills/<drill id>/, listens on a free port of the
unix socket only (listen_addresses ''), never archives, and is removed whatever happens.

Physical (local instances): pg_verifybackup first (a corrupted or missing file ends the drill
there); the base backup is copied, `restore_command` reads the instance's WAL archive, and
recovery stops at the target time (or at the end of the archive for "latest") and promotes.
Logical (external instances): the manifest's sums and pg_restore --list first; then a fresh
cluster, the globals (roles without passwords), and pg_restore of each database.

Checks, each {"name", "ok", "detail"}: `manifest`, `restore`, `tables_readable` (every table of
every database counted), `row_counts` (against the counts taken when the backup ended: exact
when nothing was replayed past the backup, else the differences are listed), and one
`check:<name>` per check query of the policy. Check queries are the owning team's SQL, so they
run in a READ ONLY transaction, with a statement timeout, as a role holding only
pg_read_all_data (never the superuser: on the scratch cluster it could read the host's files).
Then one `team:<team>:<name>` per check a team defined for its own schemas
(provisioning/backups/team_checks.py): each team's as a role that reads only that team's schemas.

RTO: drill start to a cluster that answers queries after recovery. RPO: the target (the drill's
start for "latest") minus the last commit the restored copy holds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.utils import timezone
from psycopg import sql
from psycopg.conninfo import make_conninfo

from provisioning.backups import logical, physical
from provisioning.backups import team_checks as team_check_engine
from provisioning.backups.storage import storage
from provisioning.backups.tools import DATABASES_SQL, BackupError, count_rows, run, tool
from provisioning.clusters import ClusterError, LocalCluster, free_port

RECOVERY_TIMEOUT = 3600.0
CHECK_ROLE = "dbportal_drill_check"
CHECK_STATEMENT_TIMEOUT_MS = 30_000


@dataclass
class DrillResult:
    ok: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    restored_to: datetime | None = None
    error: str = ""


def scratch_dir(drill_id: int | str) -> Path:
    return Path(settings.CLUSTERS_DIR) / "drills" / str(drill_id)


def check(result: DrillResult, name: str, ok: bool, detail: str = "") -> bool:
    result.checks.append({"name": name, "ok": bool(ok), "detail": detail[:2000]})
    if not ok:
        result.ok = False
    return ok


def _append_conf(data_dir: Path, settings_: dict[str, str]) -> None:
    lines = "".join(f"{name} = {_quote(value)}\n" for name, value in settings_.items())
    with open(data_dir / "postgresql.auto.conf", "a") as handle:
        handle.write("\n# dbportal restore drill\n" + lines)


def _quote(value: str) -> str:
    # postgresql.conf string syntax: single quotes, a quote doubled. Values are the portal's own.
    return "'" + value.replace("'", "''") + "'"


def _chown_tree(path: Path) -> None:
    cluster = LocalCluster(data_dir=path, port=0)
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            cluster._chown(Path(folder, name))
    cluster._chown(path)


def _wait_promoted(cluster: LocalCluster, deadline: float) -> None:
    while True:
        try:
            with psycopg.connect(cluster.socket_conninfo(), connect_timeout=2) as conn:
                if not conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]:
                    return
        except psycopg.OperationalError:
            if not cluster.is_running():
                raise ClusterError("the restored cluster stopped during recovery") from None
        if time.monotonic() > deadline:
            raise ClusterError("recovery did not finish in time")
        time.sleep(0.05)


def _log_tail(cluster: LocalCluster) -> str:
    try:
        return "\n".join(cluster.log_file.read_text(errors="replace").splitlines()[-8:])
    except OSError:
        return ""


def _checks_on_restored(cluster: LocalCluster, backup, check_queries: list[dict], result: DrillResult,
                        *, exact_counts: bool, team_checks: list[dict] | None = None) -> None:
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True, connect_timeout=5) as conn:
        databases = [row[0] for row in conn.execute(DATABASES_SQL).fetchall()]
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(CHECK_ROLE)))
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(CHECK_ROLE)))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
            sql.Identifier(CHECK_ROLE)))
    unreadable, restored_counts = [], {}
    for database in databases:
        with psycopg.connect(cluster.socket_conninfo(database), autocommit=True, connect_timeout=5) as conn:
            counts = count_rows(conn)
        restored_counts[database] = counts
        unreadable += [f"{database}: {table}: {value}" for table, value in counts.items() if isinstance(value, str)]
    tables = sum(len(c) for c in restored_counts.values())
    check(result, "tables_readable", not unreadable,
           "; ".join(unreadable) if unreadable else f"{tables} tables in {len(databases)} databases read")
    missing, differ = [], []
    for database, counts in (backup.row_counts or {}).items():
        restored = restored_counts.get(database)
        if restored is None:
            missing.append(f"database {database}")
            continue
        for table, rows in counts.items():
            if table not in restored:
                missing.append(f"{database}: {table}")
            elif isinstance(rows, int) and restored[table] != rows:
                differ.append(f"{database}: {table} {rows} → {restored[table]}")
    ok = not missing and (not exact_counts or not differ)
    detail = "; ".join([*(f"missing {m}" for m in missing), *differ][:50]) or "every table as counted at backup time"
    if differ and not exact_counts:
        detail = f"changed after the backup (WAL replayed past it): {detail}"
    check(result, "row_counts", ok, detail)
    for query in check_queries:
        name = f"check:{query.get('name') or 'query'}"
        database = query.get("database", "")
        if database not in databases:
            check(result, name, False, f"database {database} is not in the restored copy")
            continue
        try:
            # Connected as the check role itself (unix socket, local trust of the scratch cluster), not
            # SET ROLE from the superuser: a session whose user is a superuser could set the role back.
            conninfo = make_conninfo(cluster.socket_conninfo(database), user=CHECK_ROLE)
            with psycopg.connect(conninfo, connect_timeout=5) as conn:
                conn.execute("BEGIN READ ONLY")
                conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(CHECK_STATEMENT_TIMEOUT_MS)))
                # The policy's SQL as written, in a read-only transaction, as a role that may only
                # read, on the scratch cluster. Prepared: a server-side prepared statement holds one
                # command, so "…; COMMIT; …" cannot leave the read-only transaction.
                row = conn.execute(query["sql"].encode(), prepare=True).fetchone()  # type: ignore[call-overload]
                conn.rollback()
            passed = row is not None and row[0] not in (False, None, 0)
            check(result, name, passed, f"first value: {row[0]!r}" if row else "no row")
        except psycopg.Error as exc:
            check(result, name, False, str(exc).strip().splitlines()[0])
    team_check_engine.run_team_checks(cluster, team_checks or [], databases,
                                      lambda entry: _record_team_check(result, entry))


def _record_team_check(result: DrillResult, entry: dict[str, Any]) -> None:
    # A team's failing check fails the drill like any other check (and so alerts).
    entry["detail"] = str(entry.get("detail", ""))[:2000]
    result.checks.append(entry)
    if not entry["ok"]:
        result.ok = False


def drill_physical(*, drill_id: int, instance, backup, target_time: datetime | None,
                   check_queries: list[dict], team_checks: list[dict] | None = None) -> DrillResult:
    started_wall = timezone.now()
    started = time.monotonic()
    result = DrillResult(ok=True)
    source = storage().path(backup.key)
    folder = scratch_dir(drill_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    data_dir = folder / "data"
    cluster = LocalCluster(data_dir=data_dir, port=free_port(), listen="")
    try:
        # pg_verifybackup and the copy read the same files at once (one process each); nothing
        # starts on the copy before the verification passed.
        with ThreadPoolExecutor(max_workers=1) as pool:
            verification = pool.submit(physical.verify, source)
            shutil.copytree(source, data_dir, ignore=shutil.ignore_patterns("backup_manifest"))
            try:
                check(result, "manifest", True, verification.result()[-500:])
            except BackupError as exc:
                check(result, "manifest", False, str(exc))
                return result
        archive = physical.archive_folder(instance)
        conf = {"archive_mode": "off", "restore_command": f"cp {archive}/%f %p",
                "recovery_target_action": "promote", "recovery_target_timeline": "current"}
        if target_time is not None:
            conf["recovery_target_time"] = target_time.isoformat()
        _append_conf(data_dir, conf)
        (data_dir / "recovery.signal").touch()
        data_dir.chmod(0o700)
        _chown_tree(folder)
        try:
            cluster.start(timeout=RECOVERY_TIMEOUT)
            _wait_promoted(cluster, time.monotonic() + RECOVERY_TIMEOUT)
        except (ClusterError, psycopg.Error) as exc:
            check(result, "restore", False, f"{exc}\n{_log_tail(cluster)}")
            return result
        result.rto_seconds = time.monotonic() - started
        with psycopg.connect(cluster.socket_conninfo(), connect_timeout=5) as conn:
            replayed = conn.execute("SELECT pg_catalog.pg_last_xact_replay_timestamp()").fetchone()[0]
        result.restored_to = replayed or backup.started_at
        target = target_time or started_wall
        result.rpo_seconds = max(0.0, (target - result.restored_to).total_seconds())
        check(result, "restore", True, f"recovered to {result.restored_to.isoformat()}")
        exact = replayed is None or (backup.finished_at is not None and replayed <= backup.finished_at)
        _checks_on_restored(cluster, backup, check_queries, result, exact_counts=exact, team_checks=team_checks)
        return result
    finally:
        cluster.remove()
        shutil.rmtree(folder, ignore_errors=True)


def drill_logical(*, drill_id: int | str, instance, backup, target_time: datetime | None,
                  check_queries: list[dict], extra_checks=None,
                  team_checks: list[dict] | None = None) -> DrillResult:
    """`extra_checks(cluster, result)`: more checks on the restored copy before it is removed
    (the portal's own drill verifies the audit chain there)."""
    started_wall = timezone.now()
    started = time.monotonic()
    result = DrillResult(ok=True)
    source = storage().path(backup.key)
    try:
        check(result, "manifest", True, logical.verify(source)[-500:])
    except BackupError as exc:
        check(result, "manifest", False, str(exc))
        return result
    folder = scratch_dir(drill_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cluster = LocalCluster(data_dir=folder / "data", port=free_port(), listen="")
    try:
        cluster.initdb()
        cluster.start()
        cluster.wait_ready()
        manifest = json.loads((source / logical.MANIFEST).read_text())
        errors = []
        try:
            run([tool("psql"), "-X", "-q", "-d", cluster.socket_conninfo(), "-f", str(source / logical.GLOBALS)])
        except BackupError as exc:
            # The superuser of the scratch cluster exists already: errors on existing roles are expected.
            errors.append(f"globals: {str(exc)[:300]}")
        with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
            existing = {row[0] for row in conn.execute(DATABASES_SQL).fetchall()}
            for database in manifest["databases"]:
                if database not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        failed = []
        for database, name in manifest["databases"].items():
            try:
                run([tool("pg_restore"), "--no-password", "-d", cluster.socket_conninfo(database),
                     str(source / name)])
            except BackupError as exc:
                failed.append(f"{database}: {str(exc)[:500]}")
        if not check(result, "restore", not failed, "; ".join(failed) or "; ".join(errors) or "restored"):
            return result
        result.rto_seconds = time.monotonic() - started
        result.restored_to = backup.started_at
        result.rpo_seconds = max(0.0, ((target_time or started_wall) - backup.started_at).total_seconds())
        _checks_on_restored(cluster, backup, check_queries, result, exact_counts=True, team_checks=team_checks)
        if extra_checks is not None:
            extra_checks(cluster, result)
        return result
    finally:
        cluster.remove()
        shutil.rmtree(folder, ignore_errors=True)
