#!/usr/bin/env python
"""Monitoring benchmark (issue #21, outside the test suite): one run prints every figure and ratio.

    .venv/bin/python bench/monitoring.py [--instances 20] [--period 15] [--rounds 3]
                                         [--tables 1000] [--columns 20] [--only sampling|dictionary]

Starts its own local clusters (the portal's LocalCluster, pgserver's PostgreSQL, scram auth,
var/bench/monitoring-*; removed at the end), never the dev or test ones.

1. Sampling: --instances clusters, each sampled once a period (--period seconds) by
   provisioning.monitoring.take_sample exactly as the per-instance beat task does (admin login
   over TCP, one connection to the maintenance database and one per managed database), and the
   sample serialised to JSON as stored. CPU of one period = the sampler process's CPU plus every
   cluster's (its processes' utime+stime and the postmaster's reaped children's, i.e. the
   backends the samples opened), minus the same clusters' CPU over an idle period of the same
   length (autovacuum, checkpointer: not the sampler's cost). Goal: under 5% of one core.
   Per instance, one sample's queries (connects included, the `duration_ms` it records): goal
   under 50 ms. Not included: the portal side (one INSERT of the row and the alert evaluation,
   a few ORM queries on the portal database).
2. Dictionary: one database with --tables tables of --columns columns each (a primary key, one
   more index, a comment on each table), read by provisioning.dictionary.read_catalog (seven
   set-based catalog queries in two pipelined batches: names, owners, comments, types, defaults,
   constraint and index definitions, sizes, folded into the dictionary) against the bare catalog
   queries (the eight catalogs it reads, plain columns, no functions), both fetched to Python on one
   warm connection, interleaved, median of 7. Goal: under 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_VAR = ROOT / "var" / "bench"
os.environ["PORTAL_VAR_DIR"] = str(BENCH_VAR)
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.test"

TICKS = os.sysconf("SC_CLK_TCK")

BARE_CATALOG = [
    "SELECT oid, nspname, nspowner FROM pg_catalog.pg_namespace",
    "SELECT oid, relnamespace, relname, relkind, relowner, reltuples FROM pg_catalog.pg_class"
    " WHERE relkind IN ('r', 'p', 'v', 'm', 'f')",
    "SELECT attrelid, attname, atttypid, atttypmod, attnotnull, attnum FROM pg_catalog.pg_attribute"
    " WHERE attnum > 0 AND NOT attisdropped",
    "SELECT conrelid, conname, contype, confrelid FROM pg_catalog.pg_constraint",
    "SELECT indrelid, indexrelid, indisunique, indisprimary FROM pg_catalog.pg_index",
    # The catalogs the dictionary also joins, for defaults, comments and type names: raw rows, the
    # decoding (pg_get_expr, format_type) left to the reader's side of the comparison.
    "SELECT adrelid, adnum, adbin FROM pg_catalog.pg_attrdef",
    "SELECT objoid, classoid, objsubid, description FROM pg_catalog.pg_description",
    "SELECT oid, typname, typnamespace FROM pg_catalog.pg_type",
]


def start_clusters(count: int) -> list:
    from provisioning.clusters import LocalCluster, free_port

    clusters = []
    for index in range(count):
        data_dir = BENCH_VAR / f"monitoring-{index}"
        stale = LocalCluster(data_dir=data_dir, port=0)
        if stale.initialized:
            stale.remove()
        shutil.rmtree(data_dir, ignore_errors=True)
        cluster = LocalCluster(data_dir=data_dir, port=free_port())
        cluster.admin_password = secrets.token_urlsafe(18)
        cluster.initdb(auth_host="scram-sha-256", superuser_password=cluster.admin_password)
        with open(data_dir / "postgresql.conf", "a") as conf:
            conf.write("shared_buffers = 16MB\nmax_connections = 30\nfsync = off\n")
        cluster.start()
        cluster.wait_ready()
        clusters.append(cluster)
    return clusters


def instance_of(cluster, index: int) -> SimpleNamespace:
    """What take_sample reads of an Instance row."""
    return SimpleNamespace(name=f"bench-{index}", host="127.0.0.1", port=cluster.port, database="postgres",
                           admin_user="postgres", admin_password=cluster.admin_password, replica_of_id=None,
                           replica_lag_bytes=None, replica_lag_seconds=None)


def _proc_times(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return out


def clusters_cpu_seconds(clusters: list) -> float:
    ticks = 0
    for cluster in clusters:
        postmaster = cluster.postmaster_pid()
        own, reaped = _proc_times(postmaster)
        ticks += own + reaped
        for child in _children(postmaster):
            ticks += _proc_times(child)[0]
    return ticks / TICKS


def bench_sampling(clusters: list, *, period: float, rounds: int) -> None:
    from provisioning.monitoring import take_sample

    instances = [instance_of(cluster, index) for index, cluster in enumerate(clusters)]
    for instance in instances:  # warm-up: first connections, catalog caches
        take_sample(instance)
    idle_start = clusters_cpu_seconds(clusters)
    time.sleep(period)
    idle = clusters_cpu_seconds(clusters) - idle_start
    durations: list[float] = []
    per_round: list[float] = []
    for _ in range(rounds):
        servers_before, client_before, started = clusters_cpu_seconds(clusters), time.process_time(), time.monotonic()
        for instance in instances:
            body, duration_ms = take_sample(instance)
            json.dumps(body)
            durations.append(duration_ms)
        client = time.process_time() - client_before
        time.sleep(max(period - (time.monotonic() - started), 0))
        servers = clusters_cpu_seconds(clusters) - servers_before
        per_round.append(client + max(servers - idle, 0.0))
        print(f"  round: sampler {client * 1000:.0f} ms CPU, clusters {servers * 1000:.0f} ms CPU "
              f"(idle baseline {idle * 1000:.0f} ms)")
    cost = statistics.median(per_round) / period * 100
    durations.sort()
    p50, p95 = statistics.median(durations), durations[int(0.95 * (len(durations) - 1))]
    print(f"sampling {len(instances)} instances every {period:g} s: {cost:.2f}% of one core "
          f"(goal < 5%) -> {'OK' if cost < 5 else 'MISSED'}")
    print(f"one sample's queries per instance: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {durations[-1]:.1f} ms "
          f"(goal < 50 ms) -> {'OK' if p95 < 50 else 'MISSED'}")


def bench_dictionary(cluster, *, tables: int, columns: int) -> None:
    import psycopg
    from psycopg import sql

    from provisioning.dictionary import read_catalog

    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS dict_bench")
        conn.execute("CREATE DATABASE dict_bench")
    started = time.monotonic()
    with psycopg.connect(cluster.socket_conninfo("dict_bench")) as conn, conn.transaction():
        conn.execute("CREATE SCHEMA bench")
        for n in range(tables):
            table = sql.Identifier("bench", f"t{n:04d}")
            cols = [sql.SQL("id bigint PRIMARY KEY")] + [
                sql.SQL("{} {} {}").format(sql.Identifier(f"c{c:02d}"),
                                           sql.SQL(("text", "integer", "numeric(12,2)", "timestamptz")[c % 4]),
                                           sql.SQL("NOT NULL DEFAULT 0") if c % 4 == 1 else sql.SQL(""))
                for c in range(1, columns)]
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(cols)))
            conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(table, sql.Identifier("c01")))
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(f"bench table {n}")))
    print(f"dictionary: {tables} tables x {columns} columns created in {time.monotonic() - started:.1f} s")
    with psycopg.connect(cluster.socket_conninfo("dict_bench"), autocommit=True) as conn:
        def bare() -> None:
            for query in BARE_CATALOG:
                conn.execute(query).fetchall()

        body: dict = {}

        def read() -> None:
            body.update(read_catalog(conn))

        # Interleaved (bare, read, bare, read, ...), so a busy machine slows both alike.
        bare(), read()  # warm
        runs: dict = {bare: [], read: []}
        for _ in range(7):
            for work in (bare, read):
                started = time.perf_counter()
                work()
                runs[work].append(time.perf_counter() - started)
        bare_s, read_s = statistics.median(runs[bare]), statistics.median(runs[read])
        read_tables = len(body["schemas"]["bench"]["tables"])
        ratio = read_s / bare_s
        print(f"dictionary read: {read_s * 1000:.1f} ms ({read_tables} tables) vs bare catalog queries "
              f"{bare_s * 1000:.1f} ms: {ratio:.2f}x (goal < 2x) -> {'OK' if ratio < 2 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--period", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--only", choices=["sampling", "dictionary"])
    args = parser.parse_args()

    import django

    django.setup()
    BENCH_VAR.mkdir(parents=True, exist_ok=True)
    clusters = start_clusters(args.instances if args.only != "dictionary" else 1)
    try:
        if args.only in (None, "sampling"):
            bench_sampling(clusters, period=args.period, rounds=args.rounds)
        if args.only in (None, "dictionary"):
            bench_dictionary(clusters[0], tables=args.tables, columns=args.columns)
    finally:
        for cluster in clusters:
            cluster.remove()
            shutil.rmtree(cluster.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
