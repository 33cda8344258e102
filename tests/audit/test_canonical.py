"""The canonical form is one definition: Python (record) and PostgreSQL (verify) render it byte for byte."""

from __future__ import annotations

import pytest
from django.db import connection

from audit import keys
from audit.chain import canonical, json_safe
from audit.chainer import ensure_chained
from audit.models import AuditEvent
from audit.services import event_dict, record
from audit.verify import CANONICAL_SQL, canonical_in_database, verify_chain

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
    python = canonical(event_dict(stored))
    # the chainer MACed the same text verification renders
    assert keys.link(keys.by_id(stored.key_id), stored.prev_hash, python) == stored.hash
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
