"""The hash chain: canonical form of an event and the SHA-256 link to its predecessor.

Canonical form (stable across versions; documented in docs/audit.md): UTF-8 JSON of the
fields below, keys sorted, no whitespace, timestamps as ISO 8601 UTC with microseconds,
absent values as null. hash = SHA-256(prev_hash + "\\n" + canonical).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

CANONICAL_FIELDS = (
    "seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance",
    "database", "statement", "request_id", "approvers", "outcome", "details",
)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event: dict[str, Any]) -> str:
    body = {}
    for field in CANONICAL_FIELDS:
        value = event.get(field)
        if field == "ts" and isinstance(value, datetime):
            value = format_ts(value)
        if value == "" and field in ("actor_ip",):
            value = None
        body[field] = value
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def link(prev_hash: str, event: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical(event)).encode("utf-8")).hexdigest()
