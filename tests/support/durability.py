"""Test clusters trade durability for speed: their data is thrown away after the run.

With fsync on, every commit, every flush between transactional tests (a TRUNCATE of every
table) and every CREATE DATABASE waits for the disk; the suite spends minutes there. A crash of
a test postmaster (tests kill some on purpose) still loses nothing: only an OS crash would.
Production clusters (`make run`, instances the portal creates) keep the `fsync = on` initdb wrote.
"""

from __future__ import annotations

import psycopg


def without_fsync(conninfo: str) -> None:
    """ALTER SYSTEM SET fsync = off on the cluster behind `conninfo` (a superuser's), and reload."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute("SHOW fsync").fetchone()[0] == "off":
            return
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("SELECT pg_reload_conf()")
