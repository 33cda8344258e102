"""Performs an approved `restore` request (issue #20): database D of a local instance as it was at
time T, in a new local instance; called by the engine like the replica runner.

The engine holds the request's liveness lock, claims it, checks the plan hash and records
applied / failed with the audit events (`sql.executed` per step, `request.applied`); this module
adds `backup.restored` in the transaction that registers the new instance. It is idempotent:
the build folder is deterministic (CLUSTERS_DIR/restores/request-<id>/), a retry first kills what
a killed try left running there and removes it, and a request whose instance is already
registered is returned as done.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog
from django.conf import settings
from django.db import transaction
from psycopg import sql

from audit.services import record
from portal.choices import InstanceKind, InstanceStatus
from portal.models import Backup, ChangeRequest, Instance
from portal.models.backup import BackupMethod, BackupState
from provisioning.backups import physical
from provisioning.backups.drill import RECOVERY_TIMEOUT, _append_conf, _chown_tree, _log_tail, _wait_promoted
from provisioning.backups.storage import storage
from provisioning.backups.tools import DATABASES_SQL, BackupError
from provisioning.clusters import ClusterError, LocalCluster, free_port
from provisioning.errors import PermanentTargetError
from provisioning.plans.restore import describe
from provisioning.replicas.local import _kill_and_wait, processes_using

log = structlog.get_logger(__name__)


def build_dir(request: ChangeRequest) -> Path:
    return Path(settings.CLUSTERS_DIR) / "restores" / f"request-{int(request.pk)}"


def apply(request: ChangeRequest, *, worker: str = "") -> list[dict[str, Any]]:
    source = request.instance
    payload = request.payload
    name, database = payload["name"], payload["database"]
    target = datetime.fromisoformat(payload["target_time"])
    folder = build_dir(request)
    data_dir = folder / "data"
    lines = {key: line.as_string(None) for key, line in describe(payload)}
    done: list[dict[str, Any]] = []
    started = time.monotonic()

    def step(key: str) -> None:
        nonlocal started
        done.append({"sql": lines[key], "ms": round((time.monotonic() - started) * 1000, 1), "error": ""})
        started = time.monotonic()

    existing = Instance.objects.filter(name=name).first()
    if existing is not None:
        if existing.data_dir == str(data_dir):
            return [{"sql": text, "ms": None, "error": ""} for text in lines.values()]
        raise PermanentTargetError(f"an instance named {name} exists and is not this restore's")
    _kill_and_wait(processes_using(folder))
    shutil.rmtree(folder, ignore_errors=True)

    backup = (Backup.objects.filter(instance=source, state=BackupState.OK, method=BackupMethod.PHYSICAL,
                                    deleted_at__isnull=True, finished_at__lte=target)
              .order_by("-started_at").first())
    if backup is None:
        raise PermanentTargetError(f"no verified physical backup of {source.name} ended before {target.isoformat()}")
    try:
        physical.verify(storage().path(backup.key))
    except BackupError as exc:
        raise PermanentTargetError(f"backup {backup.pk} fails verification: {exc}") from None
    step("backup")

    folder.mkdir(parents=True)
    cluster = LocalCluster(data_dir=data_dir, port=free_port(), listen="127.0.0.1")
    try:
        shutil.copytree(storage().path(backup.key), data_dir, ignore=shutil.ignore_patterns("backup_manifest"))
        _append_conf(data_dir, {"archive_mode": "off", "restore_command": f"cp {physical.archive_folder(source)}/%f %p",
                                "recovery_target_time": target.isoformat(), "recovery_target_action": "promote"})
        (data_dir / "recovery.signal").touch()
        data_dir.chmod(0o700)
        _chown_tree(folder)
        try:
            cluster.start(timeout=RECOVERY_TIMEOUT)
            _wait_promoted(cluster, time.monotonic() + RECOVERY_TIMEOUT)
        except (ClusterError, psycopg.Error) as exc:
            raise PermanentTargetError(f"recovery failed: {exc}\n{_log_tail(cluster)}") from None
        step("recover")
        with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
            for setting in ("restore_command", "recovery_target_time", "recovery_target_action",
                            "archive_command", "archive_timeout"):
                conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(setting)))
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
            version = conn.execute("SHOW server_version").fetchone()[0]
        step("start")
        with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
            databases = [row[0] for row in conn.execute(DATABASES_SQL).fetchall()]
            if database not in databases:
                raise PermanentTargetError(f"database {database} did not exist on {source.name} at the target time")
            for other in databases:
                if other not in (database, source.database, "postgres"):
                    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(other)))
        step("prune")
        with transaction.atomic():
            restored = Instance(name=name, environment=source.environment, kind=InstanceKind.LOCAL,
                                host="127.0.0.1", port=cluster.port, database=source.database,
                                admin_user=source.admin_user, data_dir=str(data_dir),
                                status=InstanceStatus.REACHABLE, server_version=str(version)[:60])
            restored.admin_password = source.admin_password
            restored.save()
            record("backup.restored", object_type="instance", object_id=restored.pk, instance=restored,
                   request_id=request.pk, outcome="ok",
                   details={"source": source.name, "database": database, "target_time": target.isoformat(),
                            "backup": backup.pk, "instance": name, "port": cluster.port})
        step("register")
    except BaseException:
        cluster.remove()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("restore.done", request=request.pk, instance=name, worker=worker)
    return done
