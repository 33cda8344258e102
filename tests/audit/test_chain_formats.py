"""Chain formats 1 and 2 in one log (audit/chain.py, docs/audit.md "Canonical form").

An upgraded portal's history stays in format 1 (the canonical JSON form) and new events are chained
in format 2 (the event's COPY line); during an upgrade an older process may still chain format 1
after format 2 began. Verification checks each event in its own format, in one pass or in parallel
ranges, and a changed event or a changed format is found at its seq like any other change.

The older portal is played by re-chaining events in format 1 with the key (what its chainer did)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from audit import keys
from audit.chain import GENESIS_HASH
from audit.chainer import ensure_chained
from audit.models import AuditEvent, AuditHead
from audit.services import event_dict, record
from audit.verify import verify_chain
from tests.audit.test_chain import _raw, _tamper
from tests.audit.test_keyed_chain import _fresh_log, _journal


def _rechain(formats: dict[int, int]) -> None:
    """From the smallest seq in `formats` to the head: each event in its given format (else its
    own), linked and MACed under its own key as a chainer of that format does; the head follows."""
    first = min(formats)
    before = AuditEvent.objects.filter(seq=first - 1).values_list("hash", flat=True).first()
    prev = before or GENESIS_HASH
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    for row in AuditEvent.objects.filter(seq__gte=first).order_by("seq"):
        row.chain_format, row.prev_hash = formats.get(row.seq, row.chain_format), prev
        row.hash = prev = keys.seal_event(keys.by_id(row.key_id) if row.key_id else None, event_dict(row))
        _raw("UPDATE audit_auditevent SET chain_format = %s, prev_hash = %s, hash = %s WHERE seq = %s",
             [row.chain_format, row.prev_hash, row.hash, row.seq])
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    _raw("UPDATE audit_audithead SET hash = %s WHERE id = 1", [prev])


def _formats() -> list[int]:
    return list(AuditEvent.objects.filter(seq__gt=0).order_by("seq").values_list("chain_format", flat=True))


def test_the_chainer_writes_format_2_and_the_guard_keeps_a_chained_format(db):
    _fresh_log()
    _journal(2)
    assert _formats() == [2, 2]
    # the append-only guard: a chained event's format cannot change (only the chainer's one-time
    # assignment to a pending row sets it)
    with pytest.raises(Exception, match="append-only"):
        _raw("UPDATE audit_auditevent SET chain_format = 1 WHERE seq = 1")


def test_a_history_in_format_1_then_format_2_verifies_and_each_change_is_found(db):
    _fresh_log()
    _journal(6)
    _rechain({1: 1, 2: 1, 3: 1})  # the portal's history from before format 2
    assert _formats() == [1, 1, 1, 2, 2, 2]
    result = verify_chain()
    assert result.ok, result.problem
    assert result.events == 6
    for seq in (2, 5):  # one event of each format, altered: found at its seq
        original = AuditEvent.objects.get(seq=seq).actor
        _tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [seq])
        result = verify_chain()
        assert (result.ok, result.first_broken_seq) == (False, seq), result.problem
        assert "altered" in result.problem
        _tamper("UPDATE audit_auditevent SET actor = %s WHERE seq = %s", [original, seq])
    assert verify_chain().ok


def test_format_1_chained_after_format_2_during_an_upgrade_verifies(db):
    _fresh_log()
    _journal(6)
    _rechain({4: 1, 5: 1})  # an older process chained two events after format 2 began
    assert _formats() == [2, 2, 2, 1, 1, 2]
    assert verify_chain().ok
    _tamper("UPDATE audit_auditevent SET statement = 'DROP TABLE x' WHERE seq = 5")
    result = verify_chain()
    assert (result.ok, result.first_broken_seq) == (False, 5), result.problem


@pytest.mark.parametrize(("seq", "value", "found"), [
    (2, 2, "altered"),  # a format-1 event said to be format 2
    (5, 1, "altered"),  # a format-2 event said to be format 1 (its MAC covers the line with "2")
    (5, 3, "not one it can be"),  # a format no portal writes
])
def test_a_changed_format_is_found_at_its_seq(db, seq, value, found):
    _fresh_log()
    _journal(6)
    _rechain({1: 1, 2: 1, 3: 1})
    _tamper("UPDATE audit_auditevent SET chain_format = %s WHERE seq = %s", [value, seq])
    result = verify_chain()
    assert (result.ok, result.first_broken_seq) == (False, seq), result.problem
    assert found in result.problem


@pytest.mark.django_db(transaction=True)
def test_parallel_ranges_over_both_formats_find_what_one_pass_finds():
    """Ranges read by several server processes at once, split where the formats change."""
    for i in range(12):
        record("test.formats", actor="tester", details={"i": i})
    ensure_chained()
    seqs = list(AuditEvent.objects.filter(action="test.formats").order_by("seq").values_list("seq", flat=True))
    assert AuditHead.objects.get(pk=1).seq == seqs[-1]
    first = AuditEvent.objects.filter(seq__gt=0).order_by("seq").values_list("seq", flat=True).first()
    try:
        # the history up to seqs[4] in format 1 (read in parallel ranges, rendered by the server),
        # then format 2 (one range beside them) holding two format-1 events of an older process
        _rechain({seq: 1 for seq in (*range(first, seqs[4] + 1), *seqs[8:10])})
        single = verify_chain(workers=1)
        assert single.ok, single.problem
        for workers in (2, 3, 4):
            parallel = verify_chain(workers=workers, parallel_min=0)
            assert parallel.ok, (workers, parallel.problem)
            assert (parallel.events, parallel.head_hash) == (single.events, single.head_hash)
        for target in (seqs[3], seqs[6], seqs[9]):  # format 1, format 2, format 1 after format 2
            _tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [target])
            for workers in (1, 3):
                result = verify_chain(workers=workers, parallel_min=0)
                assert result.first_broken_seq == target, (workers, target, result.problem)
            _tamper("UPDATE audit_auditevent SET actor = 'tester' WHERE seq = %s", [target])
    finally:
        _rechain({seq: 2 for seq in range(first, seqs[-1] + 1)})  # the shared log as the chainer left it
    assert verify_chain(workers=3, parallel_min=0).ok


def test_rows_read_from_libpq_end_with_the_server_error_and_leave_the_connection_usable(db):
    """Verification reads COPY rows straight from libpq (audit.verify_lines._rows): every row the server
    sent, then its error as an exception, never a silently short read; the connection still works."""
    import psycopg

    from audit.verify_lines import _rows

    failing = ("COPY (SELECT CASE WHEN g < 1000 THEN g ELSE 1 / (g - g) END FROM generate_series(1, 5000) AS g)"
               " TO STDOUT")
    rows = []
    with connection.cursor() as cursor:
        with pytest.raises(psycopg.DatabaseError, match="division by zero"), transaction.atomic():
            with cursor.cursor.copy(failing) as copy:
                rows.extend(_rows(copy))
        assert rows == [f"{g}\n".encode() for g in range(1, len(rows) + 1)] and len(rows) <= 999
        with cursor.cursor.copy("COPY (SELECT generate_series(1, 3)) TO STDOUT") as copy:
            assert list(_rows(copy)) == [b"1\n", b"2\n", b"3\n"]
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
