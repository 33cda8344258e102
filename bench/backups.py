"""Benchmark: the portal's physical backup of a ~1 GB local cluster against a bare `pg_basebackup`,
and a restore drill's RTO against a bare restore and start, in the same run.

    .venv/bin/python bench/backups.py [--mb 1024] [--rounds 2]

Runs on its own embedded portal database under var/bench-backups (PORTAL_VAR_DIR), creates a
local instance holding about --mb MB, switches its WAL archiving on (the one restart, not timed),
then per round:
- bare backup: `pg_basebackup -Fp -X stream -c fast` into a scratch folder;
- portal backup: `backup_run` (pg_basebackup with SHA-256 manifest, pg_verifybackup, row counts,
  the catalog rows and audit events); goal portal / bare <= 1.2;
- bare restore: copy the base backup, recovery settings, `pg_ctl start`, until it accepts
  queries after promotion;
- drill: `drill_run` (pg_verifybackup, copy, recovery, checks); its RTO is start to queryable;
  goal drill RTO / bare restore <= 1.5.
Prints the medians and their ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("PORTAL_VAR_DIR", str(BASE_DIR / "var" / "bench-backups"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")
os.environ.setdefault("PORTAL_SECRET_KEY", "bench-secret-key-" + "x" * 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import django

    from portal import embedded

    var_dir = Path(os.environ["PORTAL_VAR_DIR"])
    var_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        embedded.ensure_database(var_dir)
    if not os.environ.get("REDIS_URL"):
        embedded.ensure_redis(var_dir)
    embedded.ensure_keys()
    django.setup()
    import psycopg
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)

    from django.contrib.auth.models import User

    from portal.models import Backup, BackupPolicy, RestoreDrill
    from portal.services.backups import backup_run, drill_request, drill_run
    from portal.services.demo import seed_people
    from portal.services.instances import instance_create_local
    from provisioning.backups import physical
    from provisioning.backups.drill import _append_conf, _chown_tree, _wait_promoted
    from provisioning.backups.storage import storage
    from provisioning.backups.tools import run, tool
    from provisioning.clusters import LocalCluster, free_port

    seed_people("bench-password")
    admin = User.objects.get(username="admin")
    name = f"bench_bk_{os.getpid()}"
    instance = instance_create_local(actor=admin, name=name, databases=("app",))
    cluster = LocalCluster(Path(instance.data_dir), instance.port)
    print(f"instance {name} on 127.0.0.1:{instance.port}; loading ~{args.mb} MB …", flush=True)
    with psycopg.connect(cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute("CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS pad "
                     "FROM generate_series(1, %s) g", (args.mb * 1024 * 1024 // 130,))
        conn.execute("CHECKPOINT")
        size = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0]
    print(f"cluster size {size / 1024 / 1024:.0f} MB", flush=True)
    BackupPolicy.objects.create(instance=instance, method="physical", enabled=False, drill_interval_hours=0)
    physical.ensure_archiving(instance)  # the one restart; not timed

    scratch = Path(settings.CLUSTERS_DIR) / "bench-scratch"
    bare_backup, portal_backup, bare_restore, drill_rto, drill_total = [], [], [], [], []
    for round_no in range(1, args.rounds + 1):
        shutil.rmtree(scratch, ignore_errors=True)
        physical._service_owned_dir(storage().path(f"bench/{round_no}"))
        dest = storage().path(f"bench/{round_no}/base")
        started = time.monotonic()
        run([tool("pg_basebackup"), "-d", cluster.socket_conninfo(), "-D", str(dest), "-Fp", "-X", "stream",
             "-c", "fast", "--no-password"], as_service=True)
        bare_backup.append(time.monotonic() - started)
        shutil.rmtree(storage().path(f"bench/{round_no}"), ignore_errors=True)

        started = time.monotonic()
        assert backup_run(instance.pk) == "ok"
        portal_backup.append(time.monotonic() - started)
        backup = Backup.objects.filter(instance=instance, state="ok").order_by("-started_at").first()

        def bare_restore_round(key: str = backup.key) -> None:
            started = time.monotonic()
            data_dir = scratch / "data"
            shutil.copytree(storage().path(key), data_dir, ignore=shutil.ignore_patterns("backup_manifest"))
            _append_conf(data_dir, {"archive_mode": "off", "restore_command": f"cp {physical.archive_folder(instance)}/%f %p",
                                    "recovery_target_action": "promote"})
            (data_dir / "recovery.signal").touch()
            data_dir.chmod(0o700)
            _chown_tree(scratch)
            bare = LocalCluster(data_dir=data_dir, port=free_port(), listen="")
            bare.start(timeout=600)
            _wait_promoted(bare, time.monotonic() + 600)
            bare_restore.append(time.monotonic() - started)
            bare.remove()
            shutil.rmtree(scratch, ignore_errors=True)

        def drill_round() -> None:
            drill = drill_request(instance=instance, actor=admin)
            started = time.monotonic()
            assert drill_run(drill.pk) == "passed", RestoreDrill.objects.get(pk=drill.pk).checks
            drill_total.append(time.monotonic() - started)
            drill_rto.append(RestoreDrill.objects.get(pk=drill.pk).rto_seconds)

        # Alternate which goes first: the second reads a backup already in the page cache.
        for step in ((bare_restore_round, drill_round) if round_no % 2 else (drill_round, bare_restore_round)):
            step()
        print(f"round {round_no}: bare backup {bare_backup[-1]:.1f} s, portal backup {portal_backup[-1]:.1f} s, "
              f"bare restore {bare_restore[-1]:.1f} s, drill RTO {drill_rto[-1]:.1f} s "
              f"(whole drill with checks {drill_total[-1]:.1f} s)", flush=True)

    b, p = statistics.median(bare_backup), statistics.median(portal_backup)
    r, d = statistics.median(bare_restore), statistics.median(drill_rto)
    print(f"\nbackup of {size / 1024 / 1024:.0f} MB: portal {p:.1f} s vs bare pg_basebackup {b:.1f} s = {p / b:.2f}x "
          f"(goal <= 1.2x)")
    print(f"restore: drill RTO {d:.1f} s vs bare restore + start {r:.1f} s = {d / r:.2f}x (goal <= 1.5x); "
          f"whole drill with its checks {statistics.median(drill_total):.1f} s")
    cluster.remove()
    # Several GB of base backups and WAL: the bench leaves none behind.
    from provisioning.backups.storage import instance_prefix

    storage().delete(instance_prefix(instance))
    storage().delete("bench")


if __name__ == "__main__":
    main()
