"""The applied-change markers the engine keeps on every target database, and who writes them.

`dbportal_meta.applied_change` holds one row per applied plan (portal id, request id, plan
hash), written in the plan's own transaction: a retried attempt that finds its row knows the
plan committed and runs nothing again. The admin login creates the table; the executor logins
that run requester SQL (provisioning/executor_logins.py) may read and insert rows, nothing more.
"""

from __future__ import annotations

import functools
import secrets

from psycopg import sql

from provisioning.models import PortalIdentity

# Advisory lock namespace on a target database, key = instance id: catalog changes one at a time
# (concurrent GRANTs on the same objects otherwise fail with "tuple concurrently updated").
INSTANCE_LOCK_NS = 0x0DB2

MARKER_DDL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS dbportal_meta"),
    sql.SQL("REVOKE ALL ON SCHEMA dbportal_meta FROM PUBLIC"),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS dbportal_meta.applied_change ("
        " portal text NOT NULL,"
        " request_id bigint NOT NULL,"
        " plan_hash text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(),"
        " worker text NOT NULL DEFAULT '',"
        " PRIMARY KEY (portal, request_id, plan_hash))"
    ),
]


def marker_grants(role: str) -> list[sql.Composed]:
    """What an executor login needs to find and write its plans' markers."""
    return [
        sql.SQL("GRANT USAGE ON SCHEMA dbportal_meta TO {}").format(sql.Identifier(role)),
        sql.SQL("GRANT SELECT, INSERT ON dbportal_meta.applied_change TO {}").format(sql.Identifier(role)),
    ]


@functools.cache
def portal_id() -> str:
    """Who wrote a marker: several portals (or test runs) may manage the same cluster, and their
    request ids overlap, so the marker key includes this portal's id. It is a row of the portal
    database (PortalIdentity, seeded by migration), so a restore under another name keeps it;
    read once per process, since it never changes."""
    identity, _ = PortalIdentity.objects.get_or_create(pk=1, defaults={"value": secrets.token_hex(8)})
    return identity.value
