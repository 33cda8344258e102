"""Local PostgreSQL clusters on this host: initdb, pg_ctl, free ports, the OS user they run as.

One class serves the portal's embedded database, the demo instance, every `local` instance
and the replicas made from them, so there is one way to start, stop and probe a postmaster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog

from portal.conf import Config

log = structlog.get_logger(__name__)

# postgres refuses to run as root; pgserver's wheel uses the same account name.
SERVICE_USER = "pgserver"


class ClusterError(RuntimeError):
    """A local cluster could not be created, started or stopped."""


def pg_bin_dir() -> Path:
    """The PostgreSQL binaries to use: PORTAL_PG_BIN, else the pgserver wheel's, else PATH."""
    # From the environment (portal.conf), not Django settings: clusters also start before
    # settings exist (the embedded portal database) and in scripts without Django.
    configured = Config.from_env().pg_bin
    if configured is not None:
        return configured
    try:
        with warnings.catch_warnings():
            # pgserver's import probes XDG_RUNTIME_DIR, which services rarely set; irrelevant here.
            warnings.simplefilter("ignore")
            # Inside: only when PORTAL_PG_BIN is unset (the wheel's binaries), and its import has side effects.
            from pgserver._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)
    except ImportError:  # pragma: no cover - pgserver is a pinned requirement
        found = shutil.which("pg_ctl")
        if not found:
            raise ClusterError("no PostgreSQL binaries: install pgserver or set PORTAL_PG_BIN") from None
        return Path(found).parent


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_service_user() -> str | None:
    """Create the unprivileged OS account clusters run as when we are root; None otherwise."""
    if not running_as_root():
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
    return SERVICE_USER


def _make_binaries_reachable(bin_dir: Path) -> None:
    """The service user must be able to execute the binaries and read their libraries."""
    if not running_as_root():
        return
    for path in [bin_dir, *bin_dir.parents]:
        if str(path) in ("/", "/usr", "/usr/lib", "/root"):
            if str(path) == "/root":
                os.chmod(path, os.stat(path).st_mode | 0o011)
            continue
        mode = os.stat(path).st_mode
        if mode & 0o005 != 0o005:
            os.chmod(path, mode | 0o005)
    lib_dir = bin_dir.parent / "lib"
    for tree in (bin_dir, lib_dir, bin_dir.parent / "share"):
        if not tree.exists():
            continue
        for root, dirs, files in os.walk(tree):
            for d in dirs:
                p = Path(root, d)
                p.chmod(p.stat().st_mode | 0o055)
            for f in files:
                p = Path(root, f)
                p.chmod(p.stat().st_mode | 0o044)


def _make_dir_reachable(path: Path) -> None:
    """Every parent of a data directory must be traversable by the service user."""
    if not running_as_root():
        return
    for parent in path.parents:
        if str(parent) == "/":
            break
        mode = os.stat(parent).st_mode
        if mode & 0o001 == 0:
            os.chmod(parent, mode | 0o001)


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def short_socket_path(data_dir: Path) -> Path:
    """Unix socket paths are limited to ~107 bytes, so sockets live in a short /tmp folder.

    Only computes the folder's name (settings build URLs from it without touching the disk);
    `short_socket_dir` creates it.
    """
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dbportal-{digest}"


def short_socket_dir(data_dir: Path) -> Path:
    """`short_socket_path`, created (world-writable: clusters may run as another OS user)."""
    path = short_socket_path(data_dir)
    path.mkdir(mode=0o777, exist_ok=True)
    path.chmod(0o777)
    return path


def socket_url(data_dir: Path, port: int, dbname: str, *, superuser: str = "postgres") -> str:
    """The URL of a cluster's database over its unix socket; computed only, nothing is created."""
    return f"postgresql://{superuser}@/{dbname}?host={short_socket_path(data_dir)}&port={port}"


@dataclass
class LocalCluster:
    """A PostgreSQL data directory on this host and the postmaster that serves it."""

    data_dir: Path
    port: int
    listen: str = "127.0.0.1"  # "" for unix socket only
    superuser: str = "postgres"
    bin_dir: Path | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.bin_dir = Path(self.bin_dir) if self.bin_dir else pg_bin_dir()

    # -- paths and processes -------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        return short_socket_dir(self.data_dir)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postmaster.log"

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _run(self, args: list[str], *, timeout: float = 60, input_text: str | None = None) -> str:
        user = ensure_service_user()
        cmd = (["runuser", "-u", user, "--"] if user else []) + args
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input_text)
        if proc.returncode != 0:
            raise ClusterError(f"{Path(args[0]).name} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def _chown(self, path: Path) -> None:
        user = ensure_service_user()
        if user:
            info = pwd.getpwnam(user)
            os.chown(path, info.pw_uid, info.pw_gid)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initdb(self, *, auth_host: str = "scram-sha-256", superuser_password: str | None = None) -> None:
        """Create the data directory: trust over the unix socket, `auth_host` on 127.0.0.1."""
        if self.initialized:
            return
        assert self.bin_dir is not None
        _make_binaries_reachable(self.bin_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        _make_dir_reachable(self.data_dir)
        args = [
            self._bin("initdb"),
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "--encoding=UTF8",
            "--locale=C",
            "--auth-local=trust",
            f"--auth-host={auth_host}",
        ]
        pwfile = None
        if superuser_password is not None:
            pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
            pwfile.write_text(superuser_password)
            pwfile.chmod(0o600)
            self._chown(pwfile)
            args.append(f"--pwfile={pwfile}")
        try:
            self._run(args, timeout=120)
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# dbportal\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "hot_standby = on\n"
                "fsync = on\n"
                "password_encryption = 'scram-sha-256'\n"
                "log_line_prefix = '%m [%p] %q%u@%d '\n"
            )

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return True

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def start(self, *, timeout: float = 60) -> None:
        """Start the postmaster (idempotent) and wait until it accepts connections."""
        if self.is_running():
            return
        # A stale pid file after a crash or reboot would stop pg_ctl from starting.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses='{self.listen}'"
        self._run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
             "-w", "-t", str(int(timeout)), "start"],
            timeout=timeout + 10,
        )

    def stop(self, *, mode: str = "fast", timeout: float = 60) -> None:
        if not self.is_running():
            return
        self._run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)), "stop"],
            timeout=timeout + 10,
        )

    def reload(self) -> None:
        self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "reload"])

    def promote(self) -> None:
        self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-w", "promote"])

    def remove(self) -> None:
        """Stop the postmaster and delete the data directory."""
        with contextlib.suppress(ClusterError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- connecting --------------------------------------------------------------------
    def socket_conninfo(self, dbname: str = "postgres") -> str:
        """A libpq conninfo for the superuser over the unix socket (trust)."""
        return f"host={short_socket_path(self.data_dir)} port={self.port} user={self.superuser} dbname={dbname}"

    def socket_url(self, dbname: str = "postgres") -> str:
        return socket_url(self.data_dir, self.port, dbname, superuser=self.superuser)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.socket_conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def hba_add(self, line: str) -> None:
        """Put a pg_hba.conf line first (first match wins) unless present, then reload."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        if line in text.splitlines():
            return
        hba.write_text(line + "\n" + text)
        if self.is_running():
            self.reload()
