"""What a hash covers is one definition: Python (the chainer, exports, archives) and PostgreSQL
(verification) render it byte for byte, in chain format 2 (the event's COPY line) and format 1 (the
canonical JSON form of older events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from audit import keys
from audit.chain import FORMAT_COPY, canonical, copy_ts, json_safe, message
from audit.chainer import ensure_chained
from audit.models import AuditEvent
from audit.services import event_dict, record
from audit.verify import verify_chain
from audit.verify_lines import CANONICAL_SQL, canonical_in_database, copy_line_in_database

TRICKY = [
    {"text": "plain"},
    {"unicode": "café 東京 😀", "Zeta": 1, "alpha": 2, "émile": 3, "": "empty key"},
    {"control": "line\nbreak\ttab\x01\x1f\x7f", "quote": 'say "hi" \\ back\\slash', "html": "</script>"},
    {"floats": 0.1, "ms": 1.25, "round": 100.0, "neg": -2.5, "zero": -0.0, "tiny": 1e-7, "huge": 1e16},
    {"ints": 12345678901234567890, "neg": -1, "bool": True, "no": False, "none": None},
    {"nested": {"b": [1, {"z": 1, "a": 2}], "a": "x"}, "list": [3, 2, 1]},
    {},
]


@pytest.mark.parametrize("details", TRICKY)
def test_database_and_python_render_the_same_canonical_form(db, details):
    event = record("test.canonical", actor="tëster \"q\"", actor_ip="2001:db8::1", object_id="x\ny",
                   statement="SELECT '\\n' -- é", approvers=['bob "the" reviewer', "carol"], details=details)
    ensure_chained()  # the event gets its final seq (and the object record() returned with it)
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.chain_format == FORMAT_COPY == event.chain_format
    # format 2: the chainer MACed the line verification's COPY reads, and Python renders the same
    # line from the event as loaded (what exports and archives do)
    line = copy_line_in_database(event.seq)
    assert keys.seal(keys.by_id(stored.key_id), line) == stored.hash
    assert message(event_dict(stored)) == line
    # format 1 (older events): Python and the database still render the canonical form alike
    python = canonical(event_dict(stored))
    assert canonical_in_database(event.seq) == python
    with connection.cursor() as cursor:
        cursor.cursor.execute(CANONICAL_SQL, [event.seq])
        assert cursor.cursor.fetchone()[0] == python  # jsonb's own rendering of the whole event
    assert stored.details == json_safe(details)
    assert verify_chain().ok


def test_canonical_form_is_pinned():
    """A fixed event always hashes to the same text: changing the form would break every old log."""
    event = {"seq": 7, "ts": "2026-11-01T09:30:00.000001Z", "actor": "alice", "actor_ip": "10.0.0.1",
             "action": "request.submitted", "object_type": "request", "object_id": "42", "instance": "demo",
             "database": "app", "statement": "", "request_id": 42, "approvers": [], "outcome": "submitted",
             "details": {"type": "grant", "plan_hash": "ab"}}
    assert canonical(event) == (
        '{"ts": "2026-11-01T09:30:00.000001Z", "seq": 7, "actor": "alice", "action": "request.submitted", '
        '"details": {"type": "grant", "plan_hash": "ab"}, "outcome": "submitted", "actor_ip": "10.0.0.1", '
        '"database": "app", "instance": "demo", "approvers": [], "object_id": "42", "statement": "", '
        '"request_id": 42, "object_type": "request"}'
    )


HOSTILE = "".join(chr(c) for c in range(1, 128)) + "\\N \\ \\\\ é 😀 \u2028"


def test_every_character_renders_as_copy_writes_it(db):
    """Every ASCII character (COPY escapes six control characters and the backslash, and writes the
    rest as they are), a literal \\N, NULLs and an IPv4-mapped address: Python's line is the server's."""
    for fields in ({"actor": HOSTILE, "statement": HOSTILE, "object_id": "\\N", "actor_ip": "::ffff:10.1.2.3",
                    "details": {HOSTILE: HOSTILE, "n": [1.5, -0.25, 10**20]}, "approvers": [HOSTILE]},
                   {"actor": "x", "instance": "\t\n", "request_id": None, "actor_ip": None}):
        event = record("test.copy_line", **fields)
        ensure_chained()
        stored = AuditEvent.objects.get(seq=event.seq)
        assert message(event_dict(stored)) == copy_line_in_database(event.seq)
    assert verify_chain().ok


def test_copy_ts_is_what_copy_writes(db):
    """ts under DateStyle ISO and TimeZone UTC: trailing zeros of the fraction dropped, none at all
    for whole seconds; from a datetime in any zone and from the exports' text."""
    base = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    moments = [base + timedelta(microseconds=us) for us in (0, 1, 10, 100000, 120000, 123456, 999999)]
    moments.append(datetime(2026, 6, 1, 2, 0, tzinfo=UTC).astimezone(timezone_of(5)))
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('DateStyle', 'ISO, MDY', false), set_config('TimeZone', 'UTC', false)")
        for moment in moments:
            with cursor.cursor.copy("COPY (SELECT %s::timestamptz) TO STDOUT", [moment]) as copy:
                (row,) = [bytes(data) for data in copy]
            assert copy_ts(moment) == row.decode().rstrip("\n")
            assert copy_ts(moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == copy_ts(moment)


def timezone_of(hours: int):
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def test_format_2_message_is_pinned():
    """A fixed event always gives the same line: changing it would break every log since format 2."""
    event = {"seq": 7, "chain_format": 2, "key_id": "b3dbf746", "prev_hash": "0" * 64,
             "ts": "2026-11-01T09:30:00.100000Z", "actor": "alice", "actor_ip": "10.0.0.1",
             "action": "request.submitted", "object_type": "request", "object_id": "42", "instance": "demo",
             "database": "app", "statement": "SELECT 'a\\b\tc'", "request_id": 42, "approvers": ["bob"],
             "outcome": "submitted", "details": {"type": "grant", "note": "line\nbreak"}}
    assert message(event) == (
        "7\t2\tb3dbf746\t" + "0" * 64 + "\t2026-11-01 09:30:00.1+00\talice\t10.0.0.1\trequest.submitted\t"
        "request\t42\tdemo\tapp\tSELECT 'a\\\\b\\tc'\t42\t[\"bob\"]\tsubmitted\t"
        '{"note": "line\\\\nbreak", "type": "grant"}'
    ).encode()
