#!/usr/bin/env python
"""Audit benchmark (outside the test suite): one run prints every figure and ratio.

    .venv/bin/python bench/audit.py [--events 1000000] [--fresh]

Uses its own embedded PostgreSQL under var/bench (never the dev or test databases):
1. seeds the log to --events events through the log's one write path (audit.services.record_many,
   10,000 events a statement, chained by the chainer after each commit: HMAC-SHA256 under the test
   key; their ts is the database clock's, so the log spans the seeding time);
2. CSV export through the API over real HTTP (gunicorn, one sync worker) against a bare
   `COPY ... TO STDOUT (FORMAT csv)` of the same rows through psycopg; RSS growth of the worker;
3. chain verification (audit.verify) against a bare "COPY + hashlib" pass that chains SHA-256
   over the raw COPY lines.
4. appends: 1 writer and 8 concurrent writers, each event its own transaction (record() inside
   transaction.atomic(), committed, then chained by the writer's after-commit chainer or another's),
   timed until every event is chained; against a bare one-row INSERT + COMMIT per transaction, on
   one connection and on 8 at once, and the same INSERT inside Django's transaction.atomic() on 8
   processes (the floor of any business transaction). The 8 writers are separate PROCESSES (fork), not threads: the
   portal's real writers are separate gunicorn workers and Celery processes, and threads in one
   process would measure Python's GIL rather than the log.
Goals (issue #16): export >= 50% of the bare COPY's speed with < 100 MB RSS growth; verify of 1M
events <= 1.5x the bare COPY + hashlib; >= 3,000 appends/s with 8 concurrent writers.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_VAR = ROOT / "var" / "bench"
BENCH_DB = "audit_bench"
os.environ["PORTAL_VAR_DIR"] = str(BENCH_VAR)
# The bench log's signed checkpoints, next to its database (emptied with --fresh, like the log).
CHECKPOINTS = BENCH_VAR / f"audit-checkpoints-{BENCH_DB}"
os.environ["PORTAL_AUDIT_CHECKPOINT_DIR"] = str(CHECKPOINTS)
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.test"
os.environ.pop("REDIS_URL", None)


def fresh_database() -> str:
    """The bench's database on its own embedded cluster (var/bench), never dev or test; created
    anew with --fresh, else kept from the last run (seeding a million events takes minutes)."""
    import psycopg
    from psycopg import sql

    from portal.embedded import ensure_database, portal_cluster

    ensure_database(BENCH_VAR)
    cluster = portal_cluster(BENCH_VAR)
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone()
        if exists and "--fresh" in sys.argv:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        if not exists or "--fresh" in sys.argv:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
            import shutil

            shutil.rmtree(CHECKPOINTS, ignore_errors=True)
    return cluster.socket_url(BENCH_DB)


os.environ["DATABASE_URL"] = fresh_database()

import django  # noqa: E402

from portal.embedded import ensure_embedded  # noqa: E402

django.setup()
ensure_embedded()  # the bench's embedded Redis (importing settings starts nothing)

import psutil  # noqa: E402
import psycopg  # noqa: E402
import requests  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from audit.services import event, record_many  # noqa: E402
from audit.verify import verify_chain  # noqa: E402
from portal.services.demo import seed_people  # noqa: E402
from portal.services.tokens import token_issue_for_login  # noqa: E402
from provisioning.clusters import free_port  # noqa: E402

ACTIONS = ["request.submitted", "request.approved", "sql.executed", "sql.executed", "sql.executed",
           "request.applied", "auth.login", "drift.detected"]
EXPORT_SQL = (
    "COPY (SELECT seq, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ts, actor, "
    "host(actor_ip) AS actor_ip, action, object_type, object_id, instance, database, statement, request_id, "
    "approvers::text AS approvers, outcome, details::text AS details, prev_hash, hash FROM audit_auditevent "
    "WHERE TRUE ORDER BY seq) TO STDOUT (FORMAT csv, HEADER)"
)

SEED_CHUNK = 10_000


def conninfo() -> dict:
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


def synthetic(count: int, first_request: int):
    for i in range(count):
        action = ACTIONS[i % len(ACTIONS)]
        request_id = first_request + i // 8
        event = {"actor": ("alice", "bob", "system", "carol")[i % 4], "action": action, "object_type": "request",
                 "object_id": str(request_id), "instance": "demo", "database": "app", "request_id": request_id,
                 "actor_ip": f"10.0.{i % 250}.{i % 200}", "outcome": "ok",
                 "approvers": ["bob"] if action != "request.submitted" else [],
                 "details": {"attempt": 1, "position": i % 5, "ms": 1.25}}
        if action == "sql.executed":
            event["statement"] = f"GRANT SELECT ON ALL TABLES IN SCHEMA payments TO svc_{request_id % 997}"
        yield event


def seed(target: int) -> None:
    have = AuditEvent.objects.count()
    if have >= target:
        print(f"seed: {have:,} events already there")
        return
    began = time.perf_counter()
    added = 0
    chunk: list[AuditEvent] = []
    for given in synthetic(target - have, 1 + have // 8):
        chunk.append(event(**given))
        if len(chunk) == SEED_CHUNK:
            added += len(record_many(chunk))
            chunk = []
    added += len(record_many(chunk))
    elapsed = time.perf_counter() - began
    print(f"seed: {added:,} events by record_many ({SEED_CHUNK:,} a statement) in {elapsed:.1f} s "
          f"({added / elapsed:,.0f} events/s)")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditevent")


def bare_copy_csv() -> tuple[float, int]:
    with psycopg.connect(**conninfo()) as conn, conn.cursor() as cursor:
        began = time.perf_counter()
        size = 0
        with cursor.copy(EXPORT_SQL) as copy:
            for data in copy:
                size += len(data)
        return time.perf_counter() - began, size


class RssSampler(threading.Thread):
    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.running = process, 0, True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)


def api_csv(token: str) -> tuple[float, int, int]:
    port = free_port()
    env = dict(os.environ)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "portal.wsgi:application", "-b", f"127.0.0.1:{port}",
         "-w", "1", "--timeout", "600", "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/audit/export/"
        headers = {"Authorization": f"Token {token}"}
        for _ in range(100):
            try:
                # warm-up: imports and connections, a tiny export
                requests.get(url, params={"format": "csv", "request": "0"}, headers=headers, timeout=5).raise_for_status()
                break
            except requests.RequestException:
                time.sleep(0.2)
        worker = psutil.Process(server.pid).children()[0]
        baseline = worker.memory_info().rss
        sampler = RssSampler(worker)
        sampler.start()
        began = time.perf_counter()
        size = 0
        with requests.get(url, params={"format": "csv"}, headers=headers, stream=True, timeout=600) as response:
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=1 << 20):
                size += len(chunk)
        elapsed = time.perf_counter() - began
        sampler.running = False
        sampler.join()
        return elapsed, size, sampler.peak - baseline
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def bare_verify() -> tuple[float, int]:
    """COPY + hashlib: read every row as COPY text and chain SHA-256 over it (no checks, no JSON)."""
    sha256 = hashlib.sha256
    with psycopg.connect(**conninfo()) as conn, conn.cursor() as cursor:
        began = time.perf_counter()
        digest = b"0" * 64
        rows = 0
        with cursor.copy("COPY (SELECT * FROM audit_auditevent ORDER BY seq) TO STDOUT") as copy:
            for data in copy:
                digest = sha256(digest + data).hexdigest().encode()
                rows += 1
        return time.perf_counter() - began, rows


def _writer(index: int, per_writer: int, barrier) -> None:
    from django.db import connections, transaction

    from audit.services import record

    try:
        barrier.wait()
        for i in range(per_writer):
            with transaction.atomic():  # the business transaction: the event commits with it
                record("bench.append", actor=f"writer{index}", details={"i": i})
    finally:
        connections.close_all()


def _run_processes(target, writers: int, args: tuple) -> float:
    """Start `writers` forked processes running target(index, *args, barrier); seconds from the
    common start until the last one ends."""
    import multiprocessing

    from django.db import connections

    connections.close_all()  # never share a connection with a child
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers + 1)
    processes = [context.Process(target=target, args=(n, *args, barrier)) for n in range(writers)]
    for process in processes:
        process.start()
    barrier.wait()
    began = time.perf_counter()
    for process in processes:
        process.join()
        if process.exitcode:
            raise SystemExit(f"a writer failed (exit {process.exitcode})")
    return time.perf_counter() - began


def appends(writers: int, per_writer: int) -> float:
    """Events per second with `writers` processes, each appending in its own transactions, until
    every event is chained (what is left after the last commit is chained inside the timing)."""
    from audit.chainer import ensure_chained

    elapsed = _run_processes(_writer, writers, (per_writer,))
    began = time.perf_counter()
    ensure_chained()
    return writers * per_writer / (elapsed + time.perf_counter() - began)


def _bare_writer(index: int, count: int, barrier) -> None:
    with psycopg.connect(**conninfo(), autocommit=True) as conn:
        barrier.wait()
        for n in range(count):
            conn.execute("INSERT INTO bench_commit_durable VALUES (%s)", (n,))


def _django_writer(index: int, count: int, barrier) -> None:
    from django.db import connection, connections, transaction

    try:
        barrier.wait()
        for n in range(count):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("INSERT INTO bench_commit_durable VALUES (%s)", [n])
    finally:
        connections.close_all()


def django_commits(count: int, writers: int) -> float:
    """The floor of any business transaction: the same one-row INSERT inside Django's
    transaction.atomic() (BEGIN, INSERT, COMMIT: three round trips, and Django's own work)."""
    with psycopg.connect(**conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_durable (n int)")
    return writers * count / _run_processes(_django_writer, writers, (count,))


def bare_commits(count: int, writers: int = 1) -> float:
    """The ceiling: one-row INSERT + COMMIT per transaction, on `writers` connections at once."""
    with psycopg.connect(**conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_durable (n int)")
    return writers * count / _run_processes(_bare_writer, writers, (count,))


def pages() -> list[tuple[str, float]]:
    """Keyset pages of the log at this size: one page per filter, from each end."""
    from audit.selectors import event_page, parse_filters

    middle = AuditEvent.objects.order_by("-seq").values_list("ts", flat=True)[AuditEvent.objects.count() // 2]
    day = middle.date().isoformat()
    timings = []
    for params in ({}, {"since": day}, {"until": day}, {"since": day, "action": "request.applied"},
                   {"actor": "bob"}, {"request": "60000"}):
        for direction in ({"after": None}, {"before": 0}):
            began = time.perf_counter()
            event_page(parse_filters(params), limit=50, **direction)
            timings.append((f"{params} {'oldest' if 'after' in direction else 'newest'} first",
                            (time.perf_counter() - began) * 1000))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true", help="drop the bench database and seed again")
    parser.add_argument("--only", choices=("export", "pages", "verify", "appends"), action="append",
                        help="run only these parts (repeatable; default: all)")
    args = parser.parse_args()
    parts = set(args.only or ("export", "pages", "verify", "appends"))
    call_command("migrate", verbosity=0)
    seed_people("bench-password-not-secret")
    token = token_issue_for_login(user=__import__("django.contrib.auth.models", fromlist=["User"])
                                  .User.objects.get(username="carol"))[1]
    seed(args.events)
    if "export" in parts:
        export(token)
    if "pages" in parts:
        timings = pages()
        worst = max(timings, key=lambda t: t[1])
        print(f"events API: {len(timings)} keyset pages of 50 (filters by period, action, actor, request; both "
              f"ends): median {sorted(t for _, t in timings)[len(timings) // 2]:.1f} ms, slowest {worst[1]:.1f} ms "
              f"({worst[0]})")
    if "verify" in parts:
        verify()
    if "appends" in parts:
        append_figures()


def export(token: str) -> None:
    bare_copy_csv()  # warm the cache: both sides read from memory
    copy_s, copy_bytes = bare_copy_csv()
    api_s, api_bytes, rss = api_csv(token)
    print(f"export: bare COPY csv {copy_bytes / 2**20:,.0f} MiB in {copy_s:.2f} s "
          f"({copy_bytes / 2**20 / copy_s:,.0f} MiB/s); API over HTTP {api_bytes / 2**20:,.0f} MiB in {api_s:.2f} s "
          f"({api_bytes / 2**20 / api_s:,.0f} MiB/s)")
    print(f"export: speed ratio API/COPY = {copy_s / api_s * (api_bytes / copy_bytes):.2f} (goal >= 0.50); "
          f"worker RSS growth {rss / 2**20:.1f} MiB (goal < 100)")



def verify() -> None:
    bare_verify()  # warm the cache: both sides read from memory
    bare_s, rows = bare_verify()
    began = time.perf_counter()
    result = verify_chain()
    verify_s = time.perf_counter() - began
    print(f"verify: bare COPY+hashlib {rows:,} rows in {bare_s:.2f} s; audit.verify (keyed: HMAC-SHA256, "
          f"{result.checkpoints} checkpoints) {result.events:,} events in {verify_s:.2f} s, ok={result.ok}")
    print(f"verify: ratio verify/bare = {verify_s / bare_s:.2f} (goal <= 1.50)")
    # incremental: a checkpoint at the head, 10,000 more events, then only those are read
    from audit.chainer import ensure_chained
    from audit.services import audit_checkpoint

    audit_checkpoint(force=True)
    record_many([event(**given) for given in synthetic(10_000, 1 + result.events // 8)])
    ensure_chained()  # as audit_verify does first (the after-commit chainer may have left them to the beat task)
    began = time.perf_counter()
    result = verify_chain(incremental=True)
    print(f"verify: incremental from the newest checkpoint (seq {result.start_seq - 1:,}): {result.events:,} events "
          f"in {time.perf_counter() - began:.2f} s, ok={result.ok}")


def append_figures() -> None:
    ceiling = bare_commits(2000)
    ceiling8 = bare_commits(500, writers=8)
    floor8 = django_commits(500, writers=8)
    one = appends(1, 2000)
    eight = appends(8, 1000)
    print(f"appends: bare INSERT+COMMIT {ceiling:,.0f}/s on one connection, {ceiling8:,.0f}/s on 8 processes at "
          f"once; audit record() 1 writer {one:,.0f} events/s; 8 concurrent writer processes {eight:,.0f} events/s "
          "(each event its own committed transaction, all chained)")
    print(f"appends: 8 writers / goal 3,000 = {eight / 3000:.2f} (goal >= 1.00); 8 writers / bare INSERT+COMMIT "
          f"= {eight / ceiling:.2f} (one connection), {eight / ceiling8:.2f} (8 connections); 1 writer / bare = "
          f"{one / ceiling:.2f}")
    print(f"appends: the same one-row INSERT inside Django's transaction.atomic() on 8 processes {floor8:,.0f}/s "
          f"(any business transaction's floor): 8 audit writers reach {eight / floor8:.2f} of it")
    result = verify_chain()
    print(f"appends: chain after the concurrent appends ok={result.ok}, {result.events:,} events, "
          f"pending {result.pending}")


if __name__ == "__main__":
    main()
