#!/usr/bin/env python
"""Scale benchmark (#23, outside the test suite): how the portal's costs grow with its data.

    .venv/bin/python bench/scale.py            # sizes 1%, 10%, 100% of the full size below
    .venv/bin/python bench/scale.py --quick    # the two smaller sizes (under 10 minutes here)

Full size (100%): 20 real local PostgreSQL clusters holding 100,000 roles and 200,000 grants
between them, and a portal database with 10,000,000 audit events and 100,000 requests. Smaller
sizes scale every count (clusters: 4 at 1%, 8 at 10%, 20 at 100%). Everything lives under
var/bench (its own embedded PostgreSQL for the portal database; clusters under
var/bench/scale-clusters), never the dev or test databases; the data of one size is grown, not
rebuilt, into the next.

At each size it times (median of a few runs, warm): the request list (API) and search (page),
the review queue, the dashboard, entitlements (live: one instance and all; as of a date), the
audit log's first and a deep keyset page, a one-day export, incremental verification; the drift
scan of all instances, one worker slot running the per-instance tasks one after another against 4
slots running them at once (provisioning.tasks.drift_scan_instance in forked worker processes
started before the timing, as Celery's prefork pool runs it; the two timed in turn, three rounds,
medians); the inventory refresh; and the bare catalog queries (the same SQL through plain
psycopg) the scans are compared with.

Goals, printed with each figure: pages and API lists flat in the size of the data (<= 1.5x from
the smallest to the largest size); catalog scans linear in the catalog's size (time per role
within 1.5x across sizes) and within 2x of the bare catalog query; fan-out over 4 workers at
least 2.5x faster than sequential. The last line is `all goals met`, or what falls short.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_VAR = ROOT / "var" / "bench"
BENCH_DB = "scale_bench"
CLUSTERS_DIR = BENCH_VAR / "scale-clusters"
os.environ["PORTAL_VAR_DIR"] = str(BENCH_VAR)
os.environ["PORTAL_AUDIT_CHECKPOINT_DIR"] = str(BENCH_VAR / f"audit-checkpoints-{BENCH_DB}")
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.test"
os.environ.pop("REDIS_URL", None)

FULL = {"clusters": 20, "roles": 100_000, "grants": 200_000, "events": 10_000_000, "requests": 100_000}
CLUSTERS_AT = {1: 4, 10: 8, 100: 20}
FULL_QUEUE = 40  # pending requests at every size: two pages of the review queue (20 a page)
SCHEMAS_PER_CLUSTER = 40
FLAT, LINEAR, BARE, FANOUT = 1.5, 1.5, 2.0, 2.5


def fresh_database() -> str:
    import shutil

    import psycopg
    from psycopg import sql

    from portal.embedded import ensure_database, portal_cluster

    ensure_database(BENCH_VAR)
    cluster = portal_cluster(BENCH_VAR)
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    shutil.rmtree(os.environ["PORTAL_AUDIT_CHECKPOINT_DIR"], ignore_errors=True)
    return cluster.socket_url(BENCH_DB)


os.environ["DATABASE_URL"] = fresh_database()

import django  # noqa: E402

from portal.embedded import ensure_embedded  # noqa: E402

django.setup()
ensure_embedded()

import psycopg  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402
from psycopg import sql  # noqa: E402

from audit.chainer import chain_pending  # noqa: E402
from audit.services import audit_checkpoint, event, record_many  # noqa: E402
from audit.verify import verify_chain  # noqa: E402
from portal.choices import Environment, InstanceKind, InstanceStatus, RequestStatus, RequestType  # noqa: E402
from portal.models import ChangeRequest, Grant, Instance, ManagedRole, ManagedSchema, Team  # noqa: E402
from portal.selectors.entitlements import entitlements_for  # noqa: E402
from portal.services.demo import seed_people  # noqa: E402
from provisioning import catalog, inventory  # noqa: E402
from provisioning.clusters import LocalCluster, free_port  # noqa: E402
from provisioning.tasks import drift_scan_instance  # noqa: E402

PASSWORD = "scale-bench-" + secrets.token_hex(4)


def median_ms(action, runs: int = 5) -> float:
    action()  # warm
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def alternating(first, second, rounds: int) -> tuple[float, float]:
    """The median ms of each of two actions timed in turn (first, second, first, ...), after one
    warm call each: a compared pair sees the same moments of the machine, not one early, one late."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for action, out in ((first, times[0]), (second, times[1])):
            began = time.perf_counter()
            action()
            out.append((time.perf_counter() - began) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


# --- building ------------------------------------------------------------------------------------

def cluster_for(index: int) -> tuple[LocalCluster, str]:
    """A new cluster for this run (the portal database is new too): a leftover is removed first."""
    data_dir = CLUSTERS_DIR / f"c{index:02d}"
    stale = LocalCluster(data_dir=data_dir, port=0)
    if stale.initialized:
        stale.remove()
    CLUSTERS_DIR.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    cluster = LocalCluster(data_dir=data_dir, port=free_port())
    cluster.initdb(auth_host="scram-sha-256", superuser_password=password)
    cluster.start()
    cluster.wait_ready()
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")  # a bench cluster: its durability is not measured
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CREATE DATABASE app")
    with psycopg.connect(cluster.socket_conninfo("app"), autocommit=True) as conn:
        for s in range(SCHEMAS_PER_CLUSTER):
            conn.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int)").format(
                s=sql.Identifier(f"s{s:02d}")))
    return cluster, password


def grow_cluster(cluster: LocalCluster, have: int, want: int) -> None:
    """Roles r<have>..r<want-1>, each with USAGE on one schema and SELECT on its table (2 grants)."""
    if want <= have:
        return
    with psycopg.connect(cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute(sql.SQL("""
            DO $$ BEGIN FOR i IN {lo}..{hi} LOOP
                EXECUTE format('CREATE ROLE %I NOLOGIN', 'r' || i);
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', 's' || lpad((i % {n})::text, 2, '0'), 'r' || i);
                EXECUTE format('GRANT SELECT ON %I.t TO %I', 's' || lpad((i % {n})::text, 2, '0'), 'r' || i);
            END LOOP; END $$""").format(lo=sql.Literal(have), hi=sql.Literal(want - 1),
                                         n=sql.Literal(SCHEMAS_PER_CLUSTER)))


class World:
    def __init__(self) -> None:
        call_command("migrate", verbosity=0)
        seed_people(PASSWORD)
        self.team = Team.objects.get(name="payments")
        self.clusters: list[tuple[LocalCluster, Instance]] = []
        self.roles_per_cluster = 0
        self.events = 0
        self.requests = 0

    def grow(self, pct: int) -> dict:
        want_clusters = CLUSTERS_AT.get(pct, max(2, round(FULL["clusters"] * pct / 100)))
        per_cluster = FULL["roles"] * pct // 100 // want_clusters
        began = time.perf_counter()
        for index in range(len(self.clusters), want_clusters):
            cluster, password = cluster_for(index)
            instance = Instance(name=f"scale-{index:02d}", environment=Environment.DEV, kind=InstanceKind.EXTERNAL,
                                host="127.0.0.1", port=cluster.port, database="postgres", admin_user="postgres",
                                status=InstanceStatus.REACHABLE)
            instance.admin_password = password
            instance.save()
            ManagedSchema.objects.bulk_create([
                ManagedSchema(instance=instance, database="app", name=f"s{s:02d}", owner_role="postgres",
                              team=self.team) for s in range(SCHEMAS_PER_CLUSTER)])
            self.clusters.append((cluster, instance))
        for cluster, instance in self.clusters:
            have = ManagedRole.objects.filter(instance=instance).count()
            grow_cluster(cluster, have, per_cluster)
            ManagedRole.objects.bulk_create([ManagedRole(instance=instance, name=f"r{i}", team=self.team)
                                             for i in range(have, per_cluster)], batch_size=5000)
            Grant.objects.bulk_create([
                Grant(instance=instance, database="app", schema=f"s{i % SCHEMAS_PER_CLUSTER:02d}", role=f"r{i}",
                      privileges=["SELECT"], tables=["t"], team=self.team) for i in range(have, per_cluster)],
                batch_size=5000)
        self.roles_per_cluster = per_cluster
        built_clusters = time.perf_counter() - began
        self._grow_requests(FULL["requests"] * pct // 100)
        self._grow_events(FULL["events"] * pct // 100)
        # Measured as autovacuum leaves a database, not in the middle of its work after a bulk load:
        # the chained events' dead placeholder entries (audit 0010 vacuums every 100,000) made every
        # `seq > 0` query plan for 16 ms right after the 10M-event build (1.1 ms after VACUUM), and
        # the fresh requests' pages are not all-visible for index-only scans until vacuumed.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        return {"clusters": len(self.clusters), "roles": per_cluster * len(self.clusters),
                "grants": 2 * per_cluster * len(self.clusters), "events": self.events, "requests": self.requests,
                "build_s": time.perf_counter() - began, "clusters_s": built_clusters}

    def _grow_requests(self, want: int) -> None:
        alice = self.team.memberships.select_related("user").first().user
        statuses = [RequestStatus.APPLIED] * 90 + [RequestStatus.REJECTED] * 5 + [RequestStatus.FAILED] * 4 + [
            RequestStatus.SUBMITTED]
        rows = []
        for n in range(self.requests, want):
            instance = self.clusters[n % len(self.clusters)][1]
            # The first FULL_QUEUE requests are pending at every size, so the review queue shows full
            # pages at 1% too (1% of 1k requests is 10 pending: half a page, which made the queue's
            # growth measure the rows on its page rather than the size of the data).
            status = RequestStatus.SUBMITTED if n < FULL_QUEUE else statuses[n % len(statuses)]
            rows.append(ChangeRequest(
                type=RequestType.GRANT, instance=instance, team=self.team, requester=alice,
                justification=f"scale request {n}", status=status,
                payload={"role": f"r{n % max(1, self.roles_per_cluster)}", "database": "app", "schema": "s00",
                         "privileges": ["SELECT"], "tables": ["t"], "default_privileges": False},
                plan=[f'GRANT SELECT ON "s00"."t" TO "r{n}"'], plan_hash=f"{n:064x}"[-64:]))
            if len(rows) == 5000:
                ChangeRequest.objects.bulk_create(rows)
                rows = []
        ChangeRequest.objects.bulk_create(rows)
        self.requests = max(self.requests, want)

    def _grow_events(self, want: int) -> None:
        chunk = []
        for n in range(self.events, want):
            chunk.append(event(("request.submitted", "request.approved", "sql.executed", "request.applied")[n % 4],
                               actor=("alice", "bob", "system")[n % 3], object_type="request",
                               object_id=n // 4 + 1, instance=f"scale-{n % 20:02d}", request_id=n // 4 + 1,
                               outcome="ok", details={"n": n}))
            if len(chunk) == 10_000:
                record_many(chunk)
                chunk = []
                chain_pending()
        if chunk:
            record_many(chunk)
        chain_pending()
        self.events = max(self.events, want)
        # As beat does every N events: a signed checkpoint at the head, so incremental
        # verification checks only what came after it (here: the events of the measuring itself).
        audit_checkpoint(force=True)


# --- measuring -----------------------------------------------------------------------------------

def bare_catalog(instance: Instance) -> None:
    """The catalog queries a scan runs, through plain psycopg: roles once, privileges per database."""
    params = {"host": instance.host, "port": instance.port, "user": instance.admin_user,
              "password": instance.admin_password, "passfile": "/dev/null"}
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as conn:
        catalog.read_roles(conn)
        databases = catalog.read_databases(conn)
    for name in databases:
        with psycopg.connect(**params, dbname=name, autocommit=True) as conn:
            catalog.read_privileges(conn, name)


def measure(world: World) -> dict[str, float]:
    people = {}
    for username in ("alice", "bob", "carol", "admin"):
        client = Client()
        client.force_login(User.objects.get(username=username))
        people[username] = client
    instances = [instance for _, instance in world.clusters]
    first = instances[0]
    head = world.events
    figures: dict[str, float] = {}
    figures["page: request list (API)"] = median_ms(lambda: people["alice"].get("/api/v1/requests/"))
    figures["page: request search"] = median_ms(lambda: people["alice"].get("/requests/search/?q=scale+request+7"))
    figures["page: review queue"] = median_ms(lambda: people["bob"].get("/reviews/"))
    figures["page: dashboard"] = median_ms(lambda: people["admin"].get("/"))
    figures["page: audit log, first page (API)"] = median_ms(lambda: people["carol"].get("/api/v1/audit/events/"))
    figures["page: audit log, deep keyset page (API)"] = median_ms(
        lambda: people["carol"].get(f"/api/v1/audit/events/?after={max(1, head // 2)}"))
    request_id = head // 8  # one request's events, wherever it sits in the log

    def export() -> None:
        response = people["carol"].get("/api/v1/audit/export/", {"format": "csv", "request": request_id})
        assert response.status_code == 200, response.status_code
        b"".join(response.streaming_content) if response.streaming else response.content

    figures["page: export of one request's events (API)"] = median_ms(export, runs=3)
    figures["page: incremental verification"] = median_ms(lambda: verify_chain(incremental=True), runs=3)
    figures["catalog: entitlements live, one instance"] = median_ms(lambda: entitlements_for(instances=[first]), runs=3)
    figures["catalog: entitlements live, all instances"] = median_ms(lambda: entitlements_for(instances=instances),
                                                                    runs=1)
    # As of a moment after this size was built, so every record of every size counts (an `at` a
    # fixed time ago would leave out whatever the build wrote since: most of a small size).
    as_of = timezone.now()
    figures["records: entitlements as of a date, all instances"] = median_ms(
        lambda: entitlements_for(instances=instances, at=as_of), runs=1)

    # Both sides run the per-instance task the way Celery's prefork pool does: in worker processes
    # started beforehand (never timed), each task with its own Django connection, closed after it
    # (CONN_MAX_AGE 0, as the worker's Django fixup does). "Sequential" is one worker slot running
    # the tasks one after another, "4 workers" four slots: the same work, only the concurrency differs.
    connection.close()  # never share the parent's connection with forked children
    ids = [i.pk for i in instances]
    with (ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as one,
          ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as four):
        list(four.map(_start_worker, range(4)))  # the four processes exist before anything is timed
        list(one.map(_start_worker, range(1)))
        sequential, fanned = alternating(lambda: list(one.map(_scan_in_worker, ids)),
                                         lambda: list(four.map(_scan_in_worker, ids, chunksize=1)), rounds=3)
        figures["catalog: drift scan, all instances, sequential"] = sequential
        figures["catalog: drift scan, all instances, 4 workers"] = fanned
    figures["catalog: bare catalog queries, all instances"] = median_ms(
        lambda: [bare_catalog(instance) for instance in instances], runs=1)
    figures["catalog: inventory refresh, all instances"] = median_ms(
        lambda: [inventory.inventory_refresh(instance) for instance in instances], runs=1)
    return figures


def _start_worker(_: int) -> None:
    time.sleep(0.2)  # keeps the first task busy long enough for the pool to start every process


def _scan_in_worker(instance_id: int):
    try:
        return drift_scan_instance(instance_id)
    finally:
        connection.close()  # each worker process's own Django connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smaller sizes only (1%% and 10%%)")
    parser.add_argument("--sizes", default="", help="comma-separated percentages, e.g. 1,10,100")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([1, 10] if args.quick else [1, 10, 100])
    began = time.perf_counter()
    world = World()
    try:
        results = run(world, sizes)
    finally:
        for cluster, _instance in world.clusters:
            cluster.remove()  # the clusters are this run's (the next run builds its own)
    report(results, began)


def run(world: World, sizes: list[int]) -> list[tuple[int, dict, dict[str, float]]]:
    results: list[tuple[int, dict, dict[str, float]]] = []
    for pct in sizes:
        size = world.grow(pct)
        print(f"\n== {pct}%: {size['clusters']} clusters, {size['roles']:,} roles, {size['grants']:,} grants, "
              f"{size['events']:,} audit events, {size['requests']:,} requests (built in {size['build_s']:.0f} s)",
              flush=True)
        figures = measure(world)
        for name, ms in figures.items():
            print(f"  {name:<55} {ms:10.1f} ms", flush=True)
        results.append((pct, size, figures))
    return results


def report(results: list[tuple[int, dict, dict[str, float]]], began: float) -> None:
    print("\n== growth and goals")
    short: list[str] = []
    (small_pct, small_size, small), (large_pct, large_size, large) = results[0], results[-1]
    for name in small:
        if not name.startswith("page:"):
            continue
        growth = large[name] / small[name]
        ok = growth <= FLAT
        print(f"  {name:<55} {small_pct}% -> {large_pct}%: x{growth:.2f} (goal <= {FLAT})  {'ok' if ok else 'SHORT'}")
        if not ok:
            short.append(f"{name} grows x{growth:.2f}")
    for name in ("catalog: drift scan, all instances, sequential", "catalog: inventory refresh, all instances",
                 "catalog: entitlements live, all instances"):
        per_role_small = small[name] / small_size["roles"]
        per_role_large = large[name] / large_size["roles"]
        growth = per_role_large / per_role_small
        ok = growth <= LINEAR
        print(f"  {name:<55} per role {per_role_small * 1000:.1f} -> {per_role_large * 1000:.1f} us: x{growth:.2f} "
              f"(linear: goal <= {LINEAR})  {'ok' if ok else 'SHORT'}")
        if not ok:
            short.append(f"{name} is not linear (x{growth:.2f} per role)")
    for pct, _size, figures in results:
        ratio = figures["catalog: drift scan, all instances, sequential"] / figures[
            "catalog: bare catalog queries, all instances"]
        ok = ratio <= BARE
        print(f"  drift scan / bare catalog queries at {pct}%: x{ratio:.2f} (goal <= {BARE})  {'ok' if ok else 'SHORT'}")
        if not ok:
            short.append(f"drift scan is x{ratio:.2f} the bare catalog queries at {pct}%")
        speedup = figures["catalog: drift scan, all instances, sequential"] / figures[
            "catalog: drift scan, all instances, 4 workers"]
        ok = speedup >= FANOUT
        print(f"  fan-out over 4 workers at {pct}%: x{speedup:.2f} faster than sequential (goal >= {FANOUT}; "
              f"{os.cpu_count()} CPUs)  {'ok' if ok else 'SHORT'}")
        if not ok:
            short.append(f"fan-out is x{speedup:.2f} at {pct}%")
    print(f"\n(whole run {time.perf_counter() - began:.0f} s)")
    print("all goals met" if not short else "short of goals: " + "; ".join(short))


if __name__ == "__main__":
    main()
