"""The log's table under vacuum: chained events leave dead placeholder versions at the primary
key's low end, which the planner walks for any seq > 0 condition until a vacuum removes them from
the indexes (migrations audit/0010 and audit/0011)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from audit import chainer
from audit.chainer import ensure_chained
from audit.services import event, record, record_many
from tests.audit.test_chain import _raw


def test_the_log_is_vacuumed_every_100k_dead_versions_and_pending_counts_from_the_bound(db):
    """Chained events leave dead placeholder entries at the primary key's low end, which the planner
    walks for any seq > 0 condition until vacuum (migration audit/0010 bounds them); the pending count
    of verification reads from the pending bound, prepared (audit.chainer.pending_count)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'audit_auditevent'")
        assert set(cursor.fetchone()[0]) >= {"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=100000"}
    ensure_chained()
    before = chainer.pending_count()
    with transaction.atomic():
        record("test.pending_count", actor="tester")
        record("test.pending_count", actor="tester")
        assert chainer.pending_count() == before + 2  # this transaction's own, not chained yet
        ensure_chained()
        assert chainer.pending_count() == before


def _vacuum_verbose() -> str:
    """VACUUM (VERBOSE) of the log's table, and what the server said about it."""
    said: list[str] = []
    raw = connection.connection
    def handler(diagnostic) -> None:
        said.append(diagnostic.message_primary or "")

    raw.add_notice_handler(handler)
    try:
        _raw("VACUUM (VERBOSE) audit_auditevent")
    finally:
        raw.remove_notice_handler(handler)
    return "\n".join(said)


@pytest.mark.django_db(transaction=True)
def test_every_vacuum_of_the_log_removes_the_dead_placeholder_entries_from_its_indexes():
    """Migration audit/0011: with PostgreSQL's default a vacuum skips the indexes when under 2% of the
    table's pages hold dead rows, and the chained events' dead placeholder entries stay at the primary
    key's low end, as many as 2% of a growing table; with `vacuum_index_cleanup = on` none stay."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'audit_auditevent'")
        assert "vacuum_index_cleanup=on" in cursor.fetchone()[0]
    record_many([event("test.vacuum", actor="tester", details={"i": i, "pad": "x" * 200}) for i in range(3000)])
    ensure_chained()
    _vacuum_verbose()  # a clean table of 100+ pages

    def chain_a_few_and_vacuum() -> str:
        for i in range(5):  # five dead placeholder versions, on one or two of the table's pages
            record("test.vacuum.few", actor="tester", details={"i": i})
        ensure_chained()
        return _vacuum_verbose()

    _raw("ALTER TABLE audit_auditevent RESET (vacuum_index_cleanup)")
    try:
        assert "index scan bypassed" in chain_a_few_and_vacuum()  # PostgreSQL's default: the entries stay
    finally:
        _raw("ALTER TABLE audit_auditevent SET (vacuum_index_cleanup = on)")
    said = chain_a_few_and_vacuum()
    assert "index scan needed" in said and "index scan bypassed" not in said
    # the first vacuum's leftovers too: every dead entry is gone from the primary key
    assert "audit_auditevent_pkey" in said
