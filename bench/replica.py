"""Benchmark: an approved replica request until the standby streams and has caught up, against a bare
`pg_basebackup -R -X stream -c fast` + `pg_ctl start -w` of the same primary, in the same run.

    .venv/bin/python bench/replica.py [--rounds 5] [--mb 50]

Runs on its own embedded portal database under var/bench (PORTAL_VAR_DIR), creates a local
primary holding about --mb MB of data, then alternates the two ways --rounds times and prints
the medians and their ratio (goal: portal / bare <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("PORTAL_VAR_DIR", str(BASE_DIR / "var" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")
os.environ.setdefault("PORTAL_SECRET_KEY", "bench-secret-key-" + "x" * 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()

    import django

    from portal import embedded

    var_dir = Path(os.environ["PORTAL_VAR_DIR"])
    var_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        embedded.ensure_database(var_dir)  # the bench's own portal database (stopped at the end)
    if not os.environ.get("REDIS_URL"):
        embedded.ensure_redis(var_dir)  # notifications are enqueued on each transition, as in production
    embedded.ensure_keys()  # the Fernet key settings read from the state folder (importing them generates none)
    django.setup()
    import psycopg
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)

    from django.contrib.auth.models import User

    from portal.choices import RequestStatus, RequestType
    from portal.models import ChangeRequest, Instance, Team
    from portal.selectors.plan_context import plan_context_for
    from portal.services.demo import seed_people
    from portal.services.instances import instance_create_local
    from portal.services.replicas import replica_decommission
    from provisioning import engine
    from provisioning.clusters import LocalCluster, free_port
    from provisioning.plans import module_for, plan_hash, plan_text
    from provisioning.replicas.local import REPLICATION_ROLE, LocalReplicaDriver, _chown_service, replicas_root

    seed_people("bench-password")
    admin = User.objects.get(username="admin")
    alice = User.objects.get(username="alice")
    team = Team.objects.get(name="payments")
    name = f"bench_primary_{os.getpid()}"
    primary = instance_create_local(actor=admin, name=name, databases=("app",))
    print(f"primary {name} on 127.0.0.1:{primary.port}; loading ~{args.mb} MB …", flush=True)
    with psycopg.connect(LocalCluster(Path(primary.data_dir), primary.port).socket_conninfo("app"),
                         autocommit=True) as conn:
        # ~130 bytes a row on disk
        conn.execute("CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS pad "
                     "FROM generate_series(1, %s) g", (args.mb * 1024 * 1024 // 130,))
        conn.execute("CHECKPOINT")
        size = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0]
    print(f"cluster size {size / 1024 / 1024:.0f} MB", flush=True)

    driver = LocalReplicaDriver()
    bench_dir = Path(settings.VAR_DIR) / "bench-bare"

    def bare_once() -> float:
        # The same role, hba line and passfile the portal uses: only the portal's bookkeeping differs.
        password = driver._ensure_replication_role(primary)
        LocalCluster(Path(primary.data_dir), primary.port).hba_add(
            f"host replication {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256")
        shutil.rmtree(bench_dir, ignore_errors=True)
        bench_dir.mkdir(parents=True, mode=0o700)
        data = bench_dir / "data"
        data.mkdir(mode=0o700)
        passfile = bench_dir / "pgpass"
        passfile.write_text(f"127.0.0.1:{primary.port}:*:{REPLICATION_ROLE}:{password}\n")
        passfile.chmod(0o600)
        for path in (bench_dir, data, passfile):
            _chown_service(path)
        standby = LocalCluster(data, free_port())
        runas = ["runuser", "-u", "pgserver", "--"] if os.geteuid() == 0 else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSFILE": str(passfile)}
        started = time.perf_counter()
        subprocess.run(runas + [str(standby.bin_dir / "pg_basebackup"), "-D", str(data), "-R", "-X", "stream",
                                "-c", "fast", "-d", f"host=127.0.0.1 port={primary.port} user={REPLICATION_ROLE}"],
                       check=True, env=env, capture_output=True)
        standby.start()  # pg_ctl start -w
        elapsed = time.perf_counter() - started
        standby.remove()
        shutil.rmtree(bench_dir, ignore_errors=True)
        return elapsed

    def portal_once(index: int) -> float:
        module = module_for(RequestType.REPLICA)
        payload = module.validate({"name": f"{name}_r{index}"},
                                  plan_context_for(primary, team, alice, request_type=RequestType.REPLICA))
        plan = plan_text(module.render(payload))
        request = ChangeRequest.objects.create(
            type=RequestType.REPLICA, instance=primary, team=team, requester=alice, justification="bench",
            payload=payload, plan=plan, plan_hash=plan_hash(plan), status=RequestStatus.QUEUED)
        started = time.perf_counter()
        # What the apply task runs: claim, verify the plan, build; returns once the standby streams and
        # has replayed up to the primary's LSN, with the outcome recorded.
        outcome = engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker="bench")
        elapsed = time.perf_counter() - started
        request.refresh_from_db()
        assert outcome == "applied" and request.status == RequestStatus.APPLIED, request.status_detail
        replica_decommission(instance=Instance.objects.get(name=payload["name"]), actor=admin)
        return elapsed

    bare, portal = [], []
    try:
        bare_once()  # warm-up: page cache, role, hba line
        for index in range(args.rounds):
            bare.append(bare_once())
            portal.append(portal_once(index))
            print(f"round {index + 1}: bare {bare[-1]:.3f} s, portal {portal[-1]:.3f} s", flush=True)
    finally:
        LocalCluster(Path(primary.data_dir), primary.port).remove()
        shutil.rmtree(replicas_root(), ignore_errors=True)
    from django.db import connections

    connections.close_all()
    if not os.environ.get("DATABASE_URL"):
        embedded.stop_database(var_dir)
    if not os.environ.get("REDIS_URL"):
        embedded.stop_redis(var_dir)
    bare_median, portal_median = statistics.median(bare), statistics.median(portal)
    print(f"bare pg_basebackup + pg_ctl start -w: median {bare_median:.3f} s")
    print(f"portal replica request (approved -> streaming, caught up): median {portal_median:.3f} s")
    ratio = portal_median / bare_median
    print(f"ratio portal/bare: {ratio:.2f}x (goal <= 1.5x) {'OK' if ratio <= 1.5 else 'OVER GOAL'}")


if __name__ == "__main__":
    main()
