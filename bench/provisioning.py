"""Provisioning benchmark: the portal's engine against bare Celery + psycopg, in one run.

    .venv/bin/python bench/provisioning.py [--latency 50] [--drain 1000] [--concurrency 2]

(a) approve → applied latency, p50 and p95 over N requests one at a time, against the same plan
    sent to a bare Celery task that runs it through plain psycopg (same workers, same broker).
(b) N approved role/grant requests (half each) drained by the default workers (prefork, 2
    processes, as `make run` starts them), from the commit of their approvals to the last one
    applied, against the same N plans run sequentially through plain psycopg on one connection.

Everything runs on this machine under var/bench: its own embedded PostgreSQL and Redis for the
portal, and a fresh local target cluster (scram over 127.0.0.1), removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var" / "bench"
os.environ["PORTAL_VAR_DIR"] = str(VAR)
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.base"
for name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(name, None)

from portal.embedded import ensure_database, ensure_keys, ensure_redis, stop_database, stop_redis  # noqa: E402

if __name__ == "__main__":
    # A clean slate each run: the bench's own portal database, broker and target cluster.
    stop_redis(VAR)
    stop_database(VAR)
    shutil.rmtree(VAR, ignore_errors=True)
VAR.mkdir(parents=True, exist_ok=True)
ensure_keys()  # the keys settings read from var/bench (importing settings generates none)
ensure_database(VAR)
ensure_redis(VAR)

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from portal.celery import app  # noqa: E402
from portal.choices import Environment, InstanceKind, InstanceStatus, RequestStatus  # noqa: E402
from portal.models import ChangeRequest, Instance, Team  # noqa: E402
from provisioning.clusters import LocalCluster, free_port  # noqa: E402
from provisioning.connections import instance_conninfo  # noqa: E402
from provisioning.outbox import enqueue_apply  # noqa: E402
from provisioning.plans import module_for, plan_hash, plan_text  # noqa: E402

SCHEMA = "bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def role_payload(name: str) -> dict:
    return {"name": name, "login": False, "member_of": [], "connection_limit": None, "valid_until": None}


def grant_payload(role: str) -> dict:
    return {"role": role, "database": "app", "schema": SCHEMA, "privileges": ["SELECT"], "tables": "all",
            "default_privileges": False, "expires_at": None, "schema_owner": f"{SCHEMA}_owner"}


def plan_of(type_: str, payload: dict) -> list[str]:
    return plan_text(module_for(type_).render(payload, secrets=None))


def new_request(instance: Instance, team: Team, type_: str, payload: dict) -> ChangeRequest:
    plan = plan_of(type_, payload)
    return ChangeRequest(type=type_, instance=instance, team=team, justification="bench", payload=payload,
                         plan=plan, plan_hash=plan_hash(plan), status=RequestStatus.APPROVED)


class Target:
    """A fresh local cluster with database `app`, schema `bench` holding a few tables."""

    def __init__(self) -> None:
        data_dir = VAR / "clusters" / "target"
        stale = LocalCluster(data_dir=data_dir, port=0)
        if stale.initialized:
            stale.remove()
        self.cluster = LocalCluster(data_dir=data_dir, port=free_port())
        self.password = secrets.token_urlsafe(18)
        self.cluster.initdb(auth_host="scram-sha-256", superuser_password=self.password)
        self.cluster.start()
        self.cluster.wait_ready()
        with psycopg.connect(self.cluster.socket_conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(SCHEMA + "_owner")))
            conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(SCHEMA), sql.Identifier(SCHEMA + "_owner")))
            for table in range(5):
                conn.execute(sql.SQL("CREATE TABLE {}.{} (id int)").format(sql.Identifier(SCHEMA), sql.Identifier(f"t{table}")))
            conn.execute("CREATE TABLE bench_done (key text PRIMARY KEY, done_at timestamptz NOT NULL"
                         " DEFAULT clock_timestamp())")

    def admin(self, dbname: str = "app") -> psycopg.Connection:
        return psycopg.connect(self.cluster.socket_conninfo(dbname), autocommit=True)

    def create_roles(self, names: list[str]) -> None:
        with self.admin("postgres") as conn, conn.transaction():
            for name in names:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))

    def remove(self) -> None:
        self.cluster.remove()


def start_workers(concurrency: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PORTAL_LOG_LEVEL="WARNING")
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--concurrency", str(concurrency),
         "--include", "bench.bare_tasks", "--without-heartbeat", "--without-mingle", "--without-gossip",
         "-n", "bench@%h", "-l", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while " ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"workers did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    return process


def wait(predicate, timeout: float, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(interval)


def latency(instance: Instance, team: Team, target: Target, count: int) -> tuple[list[float], list[float]]:
    portal_ms: list[float] = []
    for i in range(count):
        request = new_request(instance, team, "role", role_payload(f"lat_p_{i}"))
        request.save()
        started = time.time()
        with transaction.atomic():
            enqueue_apply(request)  # the approval's commit sends the task
        done = wait(lambda r=request: ChangeRequest.objects.filter(pk=r.pk, status__in=["applied", "failed"])
                    .values_list("status", "applied_at").first(), timeout=60)
        if done[0] != "applied":
            raise SystemExit(f"request {request.pk} failed: {ChangeRequest.objects.get(pk=request.pk).status_detail}")
        portal_ms.append((done[1].timestamp() - started) * 1000)
    bare_ms: list[float] = []
    conninfo = instance_conninfo(instance, "app")
    with target.admin() as probe:
        for i in range(count):
            key = f"lat_b_{i}"
            statements = plan_of("role", role_payload(key))
            started = time.time()
            app.send_task("bench.bare_apply", args=[conninfo, statements, key])
            done_at = wait(lambda k=key: (probe.execute("SELECT done_at FROM bench_done WHERE key = %s", (k,))
                                          .fetchone()), timeout=60)[0]
            bare_ms.append((done_at.timestamp() - started) * 1000)
    return portal_ms, bare_ms


def drain(instance: Instance, team: Team, target: Target, count: int) -> tuple[float, float, dict]:
    half = count // 2
    # Grants go to roles that exist already; the other half are role requests.
    target.create_roles([f"dr_pg_{i}" for i in range(half)] + [f"dr_bg_{i}" for i in range(half)])
    requests = [new_request(instance, team, "role", role_payload(f"dr_pr_{i}")) for i in range(count - half)]
    requests += [new_request(instance, team, "grant", grant_payload(f"dr_pg_{i}")) for i in range(half)]
    ChangeRequest.objects.bulk_create(requests)
    ids = [r.pk for r in requests]
    # The clock starts when the approvals commit (the first on_commit callback, before the
    # outbox publishes their messages): from then on it is the engine's drain. Writing the
    # approvals themselves is the approving web requests' cost, timed and printed apart.
    clock: dict[str, float] = {}
    approving = time.time()
    with transaction.atomic():
        transaction.on_commit(lambda: clock.setdefault("started", time.time()))
        for request in requests:
            enqueue_apply(request)
        clock["approved"] = time.time() - approving
    started = clock["started"]
    wait(lambda: not ChangeRequest.objects.filter(pk__in=ids).exclude(status__in=["applied", "failed"]).exists(),
         timeout=1800, interval=0.05)
    finished = max(ChangeRequest.objects.filter(pk__in=ids).values_list("applied_at", flat=True))
    portal_s = finished.timestamp() - started
    statuses = dict.fromkeys(["applied", "failed"], 0)
    for status in ChangeRequest.objects.filter(pk__in=ids).values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1

    plans = [plan_of("role", role_payload(f"dr_br_{i}")) for i in range(count - half)]
    plans += [plan_of("grant", grant_payload(f"dr_bg_{i}")) for i in range(half)]
    conninfo = instance_conninfo(instance, "app")
    started = time.perf_counter()
    with psycopg.connect(**conninfo) as conn:
        for plan in plans:
            with conn.transaction():
                for statement in plan:
                    conn.execute(statement)
    bare_s = time.perf_counter() - started
    return portal_s, bare_s, statuses, clock["approved"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--drain", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    target = Target()
    team, _ = Team.objects.get_or_create(name="bench")
    instance = Instance(name="bench", environment=Environment.DEV, kind=InstanceKind.LOCAL, host="127.0.0.1",
                        port=target.cluster.port, database="postgres", admin_user="postgres",
                        status=InstanceStatus.REACHABLE)
    instance.admin_password = target.password
    instance.save()
    app.connection_for_write().default_channel.queue_purge("celery")
    workers = start_workers(args.concurrency, VAR / "workers.log")
    try:
        portal_ms, bare_ms = latency(instance, team, target, args.latency)
        p50, p95 = statistics.median(portal_ms), percentile(portal_ms, 0.95)
        b50, b95 = statistics.median(bare_ms), percentile(bare_ms, 0.95)
        print(f"(a) approve -> applied latency over {args.latency} requests (one at a time)")
        print(f"    portal engine : p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
        print(f"    bare task     : p50 {b50:7.1f} ms   p95 {b95:7.1f} ms")
        print(f"    ratio         : p50 {p50 / b50:5.2f}x    p95 {p95 / b95:5.2f}x   (goal p50 <= 3x)")
        portal_s, bare_s, statuses, approving_s = drain(instance, team, target, args.drain)
        print(f"(b) {args.drain} approved role/grant requests, {args.concurrency} worker processes")
        print(f"    approvals     : {approving_s:7.2f} s  queued in one transaction (not in the drain's time)")
        print(f"    portal engine : {portal_s:7.2f} s  ({args.drain / portal_s:6.1f}/s)  {statuses}")
        print(f"    sequential    : {bare_s:7.2f} s  ({args.drain / bare_s:6.1f}/s)  plain psycopg, one connection")
        print(f"    ratio         : {portal_s / bare_s:5.2f}x   (goal <= 2x)")
    finally:
        os.killpg(workers.pid, 15)
        try:
            workers.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(workers.pid, 9)
        target.remove()
        stop_redis(VAR)
        stop_database(VAR)
        shutil.rmtree(VAR / "clusters", ignore_errors=True)


if __name__ == "__main__":
    main()
