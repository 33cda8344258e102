"""Running the PostgreSQL client tools for backups: as whom, with which environment, what counts.

Secrets never reach a command line: a password goes into a PGPASSFILE (mode 0600, in a private
temporary folder removed afterwards); local clusters are reached over their unix socket with
the trust the portal set up for them, so no password is involved at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from portal.logging import redact_text
from provisioning.clusters import ensure_service_user, pg_bin_dir

STATEMENT_TIMEOUT_MS = 600_000
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DATABASES_SQL = "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
# Plain tables (partitions included, their parents are counted through them), no system schema.
TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""


class BackupError(RuntimeError):
    """A backup, verification or restore step failed; the message is safe to show and store."""


def tool(name: str) -> str:
    return str(pg_bin_dir() / name)


def run(args: list[str], *, env: dict[str, str] | None = None, as_service: bool = False,
        timeout: float = 24 * 3600) -> str:
    """Run a client tool; stdout on success, a BackupError naming the tool (redacted) otherwise."""
    user = ensure_service_user() if as_service else None
    cmd = (["runuser", "-u", user, "--"] if user else []) + args
    # A fixed, minimal environment: the tools are called by absolute path; nothing of the
    # worker's environment (which may hold secrets) reaches them unless passed in `env`.
    base = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "PGAPPNAME": "dbportal-backup",
            "PGCONNECT_TIMEOUT": "10"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})})
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise BackupError(f"{Path(args[0]).name} failed: {redact_text(output)}")
    return proc.stdout + proc.stderr


@contextlib.contextmanager
def passfile(host: str, port: int, user: str, password: str) -> Iterator[dict[str, str]]:
    """An environment with PGPASSFILE pointing at a 0600 file holding one line for this login."""
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    with tempfile.TemporaryDirectory(prefix="dbportal-pgpass-") as folder:
        path = Path(folder) / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{escape(host)}:{port}:*:{escape(user)}:{escape(password)}\n")
        yield {"PGPASSFILE": str(path)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_rows(conn: psycopg.Connection) -> dict[str, int | str]:
    """{"schema.table": rows} of one database; a table that cannot be read gets the error instead."""
    counts: dict[str, int | str] = {}
    tables = conn.execute(TABLES_SQL).fetchall()
    for schema, table in tables:
        try:
            with conn.transaction():
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table))).fetchone()
            counts[f"{schema}.{table}"] = int(row[0])
        except psycopg.Error as exc:
            counts[f"{schema}.{table}"] = f"error: {redact_text(str(exc).strip().splitlines()[0])}"[:300]
    return counts
