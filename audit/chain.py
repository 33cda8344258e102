"""The hash chain: canonical form of an event and the SHA-256 link to its predecessor.

Canonical form (stable across versions; docs/audit.md): the event's fields below as one JSON
object written the way PostgreSQL writes a jsonb value as text, so the database can render it
for verification at COPY speed and anyone can re-render it from an export:
- object keys ordered by the length of their UTF-8 bytes, then by those bytes; ", " between
  members, ": " after each key; arrays as "[a, b]"; nested objects follow the same rules;
- strings with only `"`, `\\` and control characters escaped (\\b \\f \\n \\r \\t, others
  as \\u00xx, lowercase), everything else as UTF-8; numbers as decimal text (no exponent);
  true / false / null;
- `ts` as ISO 8601 UTC with microseconds and a Z; an absent actor_ip or request_id as null.
hash = HMAC-SHA256(key, prev_hash + "\\n" + canonical form) as 64 lowercase hex digits (audit/keys.py);
events chained before keys existed (key_id "") keep SHA-256(prev_hash + "\\n" + canonical form).

That is chain format 1. Events chained since migration audit/0009 use format 2 (their
`chain_format` column says which), whose MACed message is the event's own line as PostgreSQL's
COPY writes it, so verification reads the table with a plain COPY and no rendering at all
(docs/audit.md "Canonical form"):
- the fields of COPY_FIELDS in that order, tab-separated, each as COPY's text format writes it
  (DateStyle ISO, TimeZone UTC): `\\N` for NULL; in text, a backslash doubled and backspace, form
  feed, newline, carriage return, tab and vertical tab as \\b \\f \\n \\r \\t \\v, every other
  character as itself; ts as `YYYY-MM-DD HH:MM:SS[.fraction without trailing zeros]+00`; inet as
  PostgreSQL prints it; jsonb as in format 1 (its own text output);
- hash = HMAC-SHA256(key, that line) (plain SHA-256 when unkeyed). prev_hash, key_id and the format
  are inside the line, so the MAC covers them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

CANONICAL_FIELDS = (
    "seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance",
    "database", "statement", "request_id", "approvers", "outcome", "details",
)

# The PostgreSQL expression that renders `ts` exactly as format_ts() does (verification and
# exports read timestamps already in canonical form, without a Python datetime round trip).
TS_SQL = """to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

_string = json.JSONEncoder(ensure_ascii=False).encode


def _key_order(item: tuple[str, Any]) -> tuple[int, bytes]:
    raw = item[0].encode("utf-8")
    return len(raw), raw


def render(value: Any) -> str:
    """A JSON value as PostgreSQL's jsonb output writes it."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(_string(k) + ": " + render(v) for k, v in sorted(value.items(), key=_key_order)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(v) for v in value) + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


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
    return render(body)


def link(prev_hash: str, event: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical(event)).encode("utf-8")).hexdigest()


def json_safe(value: Any) -> Any:
    """The value as it will read back from a jsonb column, so the hash survives the round trip.

    jsonb keeps strings, integers, booleans and null exactly, and numbers by their decimal
    digits; a float Python would print with an exponent (1e+16) reads back as an integer, and
    NaN/Infinity are refused. Such floats, and anything that is not JSON, become strings.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        text = repr(value)
        if not math.isfinite(value) or "e" in text or "E" in text:
            return text
        return 0.0 if value == 0 else value  # numeric has no negative zero
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [json_safe(v) for v in items]
    if isinstance(value, datetime):
        return format_ts(value)
    return str(value)


# The canonical form as PostgreSQL renders it, in two parts around ts and seq (the first two keys
# in canonical order): '{"ts": "' + ts + '", "seq": ' + seq + CANONICAL_REST_SQL. Format 1's chainer
# read the rest of a pending event this way and added the final ts and seq; verification renders
# the same text for every format-1 event (audit/verify_lines.py), so what was hashed on the way in
# and is checked on the way out is one definition. Only `details` and `approvers` go through
# jsonb's own output: about three times cheaper for the server than jsonb_build_object(...)::text,
# byte for byte the same (tests). host() only ever writes hex digits, dots and colons, so the
# address is quoted without to_json's escaping pass (the same text, about a tenth of the server's
# rendering cost less).
CANONICAL_REST_SQL = """', "actor": ' || to_json(actor)::text || ', "action": ' || to_json(action)::text
    || ', "details": ' || details::text || ', "outcome": ' || to_json(outcome)::text
    || ', "actor_ip": ' || coalesce('"' || host(actor_ip) || '"', 'null')
    || ', "database": ' || to_json(database)::text || ', "instance": ' || to_json(instance)::text
    || ', "approvers": ' || approvers::text || ', "object_id": ' || to_json(object_id)::text
    || ', "statement": ' || to_json(statement)::text
    || ', "request_id": ' || coalesce(request_id::text, 'null')
    || ', "object_type": ' || to_json(object_type)::text || '}'"""


# --- format 2: the event's COPY line ------------------------------------------------------------
FORMAT_JSON = 1  # the canonical JSON object above, MACed after prev_hash and a newline
FORMAT_COPY = 2  # the event's COPY text line (COPY_FIELDS), MACed as it is

# The MACed fields of format 2, in order (verification's COPY reads `hash` and then exactly these).
COPY_FIELDS = ("seq", "chain_format", "key_id", "prev_hash", "ts", "actor", "actor_ip", "action", "object_type",
               "object_id", "instance", "database", "statement", "request_id", "approvers", "outcome", "details")
# The part the chainer reads from the pending row; the fields before it are what it assigns.
COPY_STORED_FIELDS = COPY_FIELDS[5:]
# What COPY's text format escapes (PostgreSQL's CopyAttributeOutText with a tab delimiter).
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                               "\t": "\\t", "\v": "\\v"})
COPY_NULL = "\\N"


_NEEDS_ESCAPE = re.compile(r"[\\\b\f\n\r\t\v]")  # what _COPY_ESCAPES changes


def copy_text(value: str | None) -> str:
    """A text value as COPY's text format writes it."""
    return COPY_NULL if value is None else value.translate(_COPY_ESCAPES)


def copy_fields(values: list[str | None] | tuple[str | None, ...]) -> str:
    """Text values (None for NULL) as tab-separated COPY fields; escaping only when one needs it
    (the chainer's path: most events have nothing to escape)."""
    if _NEEDS_ESCAPE.search("".join([value for value in values if value is not None])):
        return "\t".join([copy_text(value) for value in values])
    return "\t".join([COPY_NULL if value is None else value for value in values])


def copy_ts(ts: datetime | str) -> str:
    """A timestamptz as COPY writes it under DateStyle ISO and TimeZone UTC (a datetime, or the
    exports' ISO 8601 text): the fraction's trailing zeros dropped, no fraction for whole seconds."""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    text = ts.astimezone(UTC).isoformat(" ")[:-6]  # without "+00:00"
    return (text.rstrip("0") if ts.microsecond else text) + "+00"


def copy_values(event: dict[str, Any]) -> list[str | None]:
    """The COPY_FIELDS of a format-2 event as read back (exports, archives, models), as text."""
    request_id = event.get("request_id")
    return [
        str(int(event["seq"])), str(FORMAT_COPY), event.get("key_id") or "", event.get("prev_hash") or "",
        copy_ts(event["ts"]), event.get("actor") or "", event.get("actor_ip") or None, event.get("action") or "",
        event.get("object_type") or "", event.get("object_id") or "", event.get("instance") or "",
        event.get("database") or "", event.get("statement") or "",
        None if request_id is None else str(int(request_id)),
        render(event.get("approvers") if event.get("approvers") is not None else []),
        event.get("outcome") or "",
        render(event.get("details") if event.get("details") is not None else {}),
    ]


def message(event: dict[str, Any]) -> bytes:
    """What an event's hash covers, from the event as exported, archived or loaded (format 1 or 2 by
    its `chain_format`; absent means 1, as in exports made before format 2)."""
    if int(event.get("chain_format") or FORMAT_JSON) == FORMAT_COPY:
        return copy_fields(copy_values(event)).encode("utf-8")
    return (event.get("prev_hash") or "").encode() + b"\n" + canonical(event).encode("utf-8")
