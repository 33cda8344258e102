"""The chain: append-only in the database, verification that names the first broken seq,
and record() + the chainer correct under concurrent writers.

record() inserts events pending (seq < 0, no hash); the chainer (audit/chainer.py) gives them
their final seq and keyed hash. Inside a test's transaction on_commit never fires, so these
tests chain explicitly (ensure_chained) where a real reader would."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from psycopg import sql

from audit import chainer, keys
from audit.chain import GENESIS_HASH
from audit.chainer import PENDING_BASE, ensure_chained
from audit.models import AuditEvent, AuditHead
from audit.services import batched, event, event_dict, record, record_many
from audit.verify import verify_chain
from audit.verify_lines import CHUNK


def _raw(statement: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _tamper(statement: str, params=None) -> None:
    """What a superuser could do: switch the guard off, change a row, switch it back on."""
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    _raw(statement, params)
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")


def _events(n: int, tag: str) -> list[AuditEvent]:
    """n events, chained, as stored."""
    for i in range(n):
        record("test.event", actor="tester", details={"tag": tag, "i": i, "ratio": 0.5, "big": 1e16},
               actor_ip="::ffff:10.0.0.1", statement="ALTER ROLE x PASSWORD 'hunter2-secret'")
    ensure_chained()
    return list(AuditEvent.objects.filter(details__tag=tag).order_by("seq"))


def _link(event: AuditEvent) -> str:
    return keys.seal_event(keys.by_id(event.key_id), event_dict(event))


def test_record_inserts_pending_and_the_chainer_assigns_seq_and_keyed_hash(db):
    head = AuditHead.objects.get(pk=1).seq
    pending = record("test.event", actor="tester")
    # recorded: in the table at once, with a negative placeholder seq and no hash yet
    placeholder = vars(pending)["seq"]  # as stored (reading .seq would chain: "assigned lazily")
    assert PENDING_BASE < placeholder < 0 and pending.hash == "" and pending.prev_hash == ""
    with connection.cursor() as cursor:
        cursor.execute("SELECT actor, hash FROM audit_auditevent WHERE seq = %s", [placeholder])
        assert cursor.fetchone() == ("tester", "")
    # a read through the model chains first: the next seq, under the current key; and the object
    # record() returned now holds its final seq and hash ("seq assigned lazily")
    stored = AuditEvent.objects.get(seq=head + 1)
    assert stored.action == "test.event" and stored.key_id == keys.current().id
    assert stored.hash == _link(stored) and len(stored.hash) == 64
    assert (pending.seq, pending.hash) == (stored.seq, stored.hash)
    assert not AuditEvent.objects.filter(seq=placeholder).exists()


def test_events_link_and_verify(db):
    # given a few events
    events = _events(3, "link")
    # then each links to its predecessor and the head holds the last hash
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 3))
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    head = AuditHead.objects.get(pk=1)
    assert (head.seq, head.hash) == (events[-1].seq, events[-1].hash)
    # and what reads back from the database hashes to the same value
    stored = AuditEvent.objects.get(seq=events[0].seq)
    assert _link(stored) == stored.hash
    assert "hunter2-secret" not in stored.statement
    result = verify_chain()
    assert result.ok, result.problem
    assert result.events >= 3 and result.head_hash == events[-1].hash and result.first_broken_seq is None


def test_first_event_links_to_genesis(db):
    record("test.event")
    ensure_chained()
    first = AuditEvent.objects.filter(seq__gt=0).order_by("seq").first()
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH


@pytest.mark.parametrize("statement", [
    "UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s",
    "DELETE FROM audit_auditevent WHERE seq = %s",
    "TRUNCATE audit_auditevent",
])
def test_update_delete_truncate_are_refused_by_the_database(db, statement):
    chained = _events(1, "refused-chained")[0]
    pending = record("test.event", actor="tester", details={"tag": "refused"})
    for seq in (vars(pending)["seq"], chained.seq):  # pending or chained alike
        with pytest.raises(Exception) as excinfo, transaction.atomic():
            _raw(statement, [seq] if "%s" in statement else None)
        assert "append-only" in str(excinfo.value)
        with connection.cursor() as cursor:
            cursor.execute("SELECT actor FROM audit_auditevent WHERE seq = %s", [seq])
            assert cursor.fetchone() == ("tester",)


ASSIGN = {"seq": "999999999", "prev_hash": "repeat('a', 64)", "hash": "repeat('b', 64)", "key_id": "'x'"}


@pytest.mark.parametrize("change", [
    {"actor": "'mallory'"},  # content changed along with the assignment
    {"ts": "ts - interval '1 second'"},  # ts moved back
    {"hash": "''"},  # no hash
    {"prev_hash": "'short'"},
    {"seq": "-5"},  # a placeholder moved, not assigned
])
def test_the_update_guard_lets_only_the_chainers_one_time_assignment_through(db, change):
    placeholder = vars(record("test.event", actor="tester"))["seq"]

    def update(assignments: dict[str, str]) -> None:
        columns = ", ".join(f"{name} = {value}" for name, value in assignments.items())
        _raw(f"UPDATE audit_auditevent SET {columns} WHERE seq = %s", [placeholder])

    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        update({**ASSIGN, **change})
    # the assignment alone passes (once): a chained row can never be assigned again
    update(ASSIGN)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        _raw("UPDATE audit_auditevent SET seq = 999999998, hash = repeat('c', 64) WHERE seq = 999999999")


def test_an_altered_event_is_found_at_its_exact_seq(db):
    events = _events(5, "alter")
    target = events[2]
    # when a superuser edits one event's content with the trigger disabled
    _tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [target.seq])
    # then verification names exactly that seq
    result = verify_chain()
    assert not result.ok
    assert result.first_broken_seq == target.seq
    assert "altered" in result.problem


def test_an_altered_details_value_is_found(db):
    events = _events(3, "details")
    _tamper("UPDATE audit_auditevent SET details = details || '{\"i\": 99}' WHERE seq = %s", [events[1].seq])
    assert verify_chain().first_broken_seq == events[1].seq


def test_a_rehashed_event_breaks_the_next_link(db):
    events = _events(3, "rehash")
    forged = dict(event_dict(events[0]), actor="mallory")  # re-MACed with the key itself
    _tamper("UPDATE audit_auditevent SET actor = 'mallory', hash = %s WHERE seq = %s",
            [keys.seal_event(keys.current(), forged), events[0].seq])
    result = verify_chain()
    assert result.first_broken_seq == events[1].seq and "prev_hash" in result.problem


def test_a_deleted_event_is_a_gap(db):
    events = _events(3, "gap")
    _tamper("DELETE FROM audit_auditevent WHERE seq = %s", [events[1].seq])
    result = verify_chain()
    assert result.first_broken_seq == events[1].seq and "gap" in result.problem


@pytest.mark.parametrize("chain_format", [1, 2])
@pytest.mark.parametrize(("column", "value"), [
    ("hash", "\t" * 64),  # the lines' field separator
    ("hash", "\x02" * 64),
    ("hash", "a\x01b"),  # the format-1 COPY's quote character (CSV doubles it)
    ("hash", "short"),  # the hash is read as the line's first 64 bytes
    ("key_id", "\x03"),  # the separator between format-1 lines in a COPY row
    ("key_id", "a\tb"),
    ("prev_hash", "a\nb"),  # the separator before the canonical form
    ("prev_hash", "\t" * 64),
    ("actor", "x\x02\x03\x01\n\ty\\N"),  # content: escaped in both formats, so only altered
])
def test_a_hand_edited_column_holding_a_separator_is_named_at_its_seq(db, column, value, chain_format):
    from tests.audit.test_chain_formats import _rechain

    events = _events(3, "separators")
    if chain_format == 1:  # as an older portal chained them (read by the format-1 reader)
        _rechain({e.seq: 1 for e in events})
    _tamper(sql.SQL("UPDATE audit_auditevent SET {} = %s WHERE seq = %s").format(sql.Identifier(column)),
            [value, events[1].seq])
    result = verify_chain()
    assert not result.ok and result.first_broken_seq == events[1].seq, result


def test_an_altered_event_is_found_past_the_first_copy_chunk(db):
    """Verification reads CHUNK events a COPY row; an edit deep in a later chunk is named exactly."""
    record_many([event("test.chunks", actor="tester", details={"i": i}) for i in range(CHUNK * 2 + 50)])
    ensure_chained()
    seqs = list(AuditEvent.objects.filter(action="test.chunks").order_by("seq").values_list("seq", flat=True))
    assert verify_chain().ok
    target = seqs[CHUNK + CHUNK // 2]
    _tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [target])
    result = verify_chain()
    assert result.first_broken_seq == target and "altered" in result.problem
    assert result.events >= len(seqs)  # every line is still counted past the break


def test_a_deleted_tail_and_a_forged_head_are_found(db):
    events = _events(3, "tail")
    _tamper("DELETE FROM audit_auditevent WHERE seq = %s", [events[2].seq])
    result = verify_chain()
    assert result.first_broken_seq == events[2].seq and "head" in result.problem
    _raw("UPDATE audit_audithead SET seq = %s, hash = %s WHERE id = 1", [events[1].seq, "f" * 64])
    result = verify_chain()
    assert result.first_broken_seq == events[1].seq and "head hash" in result.problem


def test_audit_verify_command_reports_and_is_audited(db, capsys):
    record("test.event", actor="tester")
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert '"ok": true' in out
    ensure_chained()
    verified = AuditEvent.objects.filter(action="audit.verified").order_by("-seq").first()
    assert verified.actor == "system" and verified.details["ok"] is True
    events = _events(2, "command")
    _tamper("UPDATE audit_auditevent SET outcome = 'forged' WHERE seq = %s", [events[0].seq])
    with pytest.raises(CommandError, match=f"seq {events[0].seq}"):
        call_command("audit_verify")


def test_the_after_commit_chainer_tries_once_per_interval_per_process(db, django_capture_on_commit_callbacks,
                                                                       monkeypatch):
    """A busy writer's commits are chained in batches: inside the interval an event stays pending
    (committed, never lost) until the next attempt, which chains it in recording order."""
    monkeypatch.setattr(chainer, "_last_attempt", 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        first = record("test.interval", actor="tester")
    assert first.__dict__["seq"] > 0  # chained right after its commit
    with django_capture_on_commit_callbacks(execute=True):
        second = record("test.interval", actor="tester")
    assert second.__dict__["seq"] < 0  # the process tried moments ago: left for the next attempt
    monkeypatch.setattr(chainer, "_last_attempt", time.monotonic() - chainer.AFTER_COMMIT_INTERVAL)
    with django_capture_on_commit_callbacks(execute=True):
        third = record("test.interval", actor="tester")
    assert 0 < first.__dict__["seq"] < second.__dict__["seq"] < third.__dict__["seq"]
    assert verify_chain().ok


def test_rolled_back_change_leaves_no_event_and_no_gap(db):
    before = AuditHead.objects.get(pk=1).seq
    with pytest.raises(RuntimeError), transaction.atomic():
        record("test.event", actor="tester")
        raise RuntimeError("the change failed")
    assert ensure_chained() == 0 and AuditHead.objects.get(pk=1).seq == before
    record("test.event", actor="tester")
    ensure_chained()
    assert AuditEvent.objects.get(seq=before + 1).action == "test.event"



def test_a_batched_block_appends_its_events_once_in_order(db, django_assert_num_queries):
    before = AuditHead.objects.get(pk=1).seq
    with transaction.atomic():
        with batched():
            with django_assert_num_queries(0):  # nothing is written until the block ends
                first = record("test.batched", actor="tester", details={"n": 1})
                with batched():  # a nested block joins the outer one
                    second = record("test.batched", actor="tester", details={"n": 2})
                third = record("test.batched", actor="tester", details={"n": 3})
            assert first.seq is None
        assert [e.seq for e in (first, second, third)] == [first.seq, first.seq + 1, first.seq + 2]
        assert first.seq < 0  # pending until chained
    ensure_chained()
    stored = list(AuditEvent.objects.filter(seq__gt=before).order_by("seq"))
    assert [e.seq for e in stored] == [before + 1, before + 2, before + 3]
    assert [e.details["n"] for e in stored] == [1, 2, 3]
    assert stored[1].prev_hash == stored[0].hash and AuditHead.objects.get(pk=1).hash == stored[2].hash
    assert verify_chain().ok


def test_a_batched_block_that_raises_appends_nothing(db):
    before = AuditHead.objects.get(pk=1).seq
    with pytest.raises(RuntimeError), transaction.atomic(), batched():
        record("test.batched", actor="tester")
        raise RuntimeError("the change failed")
    assert ensure_chained() == 0 and AuditHead.objects.get(pk=1).seq == before
    record("test.event", actor="tester")  # later records append at once again
    assert ensure_chained() == 1 and AuditHead.objects.get(pk=1).seq == before + 1


WRITERS = 8
PER_WRITER = 40


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_seq_gap_free_and_the_chain_valid():
    # given 8 threads, each with its own database connection, appending in its own transactions
    start = AuditHead.objects.get(pk=1).seq
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_WRITER):
                with transaction.atomic():
                    record("test.concurrent", actor=f"writer{index}", details={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then no writer failed, every seq after the start is taken exactly once, in time order (the
    # writers' own after-commit chainers did it; one may have left the last few to the next reader)
    assert not errors
    ensure_chained()
    assert not AuditEvent.objects.filter(seq__lt=0, action="test.concurrent").exists()
    seqs = list(AuditEvent.objects.filter(seq__gt=start).order_by("seq").values_list("seq", "ts", "action"))
    mine = [s for s in seqs if s[2] == "test.concurrent"]
    assert len(mine) == WRITERS * PER_WRITER
    assert [s[0] for s in seqs] == list(range(start + 1, start + 1 + len(seqs)))
    assert all(a[1] <= b[1] for a, b in zip(seqs, seqs[1:], strict=False))
    result = verify_chain()
    assert result.ok, result.problem


def _seq_of(action: str, tag: str) -> int:
    """The stored seq of one event, read without the model (whose reads may chain first)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq FROM audit_auditevent WHERE action = %s AND details->>'tag' = %s", [action, tag])
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("own_attempt", ["runs", "skipped"])
def test_an_event_committed_after_later_ones_were_chained_is_chained_and_never_lost(monkeypatch, own_attempt):
    """The after-commit chainer reads from the pending bound (not through the dead row versions
    chained events leave at the low end of the index): an event whose transaction took its
    placeholder first but commits last is chained by its own writer's after-commit run, or, when
    that run is skipped, by the beat task; seq stays gap-free."""
    from audit.tasks import chain

    monkeypatch.setattr(chainer, "AFTER_COMMIT_INTERVAL", 0.0)
    tag = f"late-{own_attempt}-{time.monotonic_ns()}"
    recorded, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                record("test.late", actor="slow", details={"tag": tag})
                recorded.set()
                release.wait(30)
                if own_attempt == "skipped":  # this process "tried moments ago"
                    monkeypatch.setattr(chainer, "_last_attempt", time.monotonic() + 3600)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    # given a writer whose transaction recorded an event (the lower placeholder) and is still open
    start = AuditHead.objects.get(pk=1).seq
    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert recorded.wait(30)
    # when another writer records and commits meanwhile (its after-commit chainer chains its event)
    with transaction.atomic():
        record("test.early", actor="fast", details={"tag": tag})
    assert _seq_of("test.early", tag) > 0
    # and the first writer commits last
    release.set()
    thread.join(30)
    assert not errors
    if own_attempt == "skipped":
        assert _seq_of("test.late", tag) < 0  # committed and pending: left to the beat task
        chain()
    # then its event is chained after the other one, and the log is gap-free and valid
    assert 0 < _seq_of("test.early", tag) < _seq_of("test.late", tag)
    seqs = list(AuditEvent.objects.filter(seq__gt=start).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))
    assert verify_chain().ok


def _pending_from() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pending_from FROM audit_audithead WHERE id = 1")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_pending_bound_never_passes_an_open_transactions_event_and_moves_past_chained_ones(monkeypatch):
    """The pending scan starts at the head's pending_from (audit/chainer.py _next_bound): it must
    stay at or below the placeholder of an event whose transaction is still open however often
    others chain, so that event, committed last and left by its own writer, is still read and
    chained before an event recorded after its commit (causal order); once no transaction is open
    the bound moves past what was chained (the scan no longer reads it)."""
    monkeypatch.setattr(chainer, "AFTER_COMMIT_INTERVAL", 0.0)
    monkeypatch.setattr(chainer, "_last_attempt", 0.0)
    tag = f"bound-{time.monotonic_ns()}"
    recorded, release = threading.Event(), threading.Event()
    placeholders: dict[str, int] = {}
    errors: list[BaseException] = []

    def open_writer() -> None:
        try:
            with transaction.atomic():
                placeholders["held"] = record("test.held", actor="slow", details={"tag": tag}).__dict__["seq"]
                recorded.set()
                release.wait(30)
                monkeypatch.setattr(chainer, "_last_attempt", time.monotonic() + 3600)  # its own run is skipped
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    # given a transaction that recorded an event and stays open
    thread = threading.Thread(target=open_writer)
    thread.start()
    assert recorded.wait(30)
    # when other writers commit and their after-commit chainers run, again and again
    for i in range(4):
        with transaction.atomic():
            record("test.passing", actor="fast", details={"tag": f"{tag}-{i}"})
        assert _seq_of("test.passing", f"{tag}-{i}") > 0  # chained right after its commit
        bound = _pending_from()
        # then the bound never passes the open transaction's placeholder
        assert bound is None or bound <= placeholders["held"]
    # when the open transaction commits (its own chainer run skipped) and another event is recorded
    release.set()
    thread.join(30)
    assert not errors
    assert _seq_of("test.held", tag) < 0  # committed and pending
    monkeypatch.setattr(chainer, "_last_attempt", 0.0)
    with transaction.atomic():
        later = record("test.after", actor="fast", details={"tag": tag})
        placeholders["after"] = later.__dict__["seq"]
    # then the held event is chained, before the one recorded after its commit
    assert 0 < _seq_of("test.held", tag) < _seq_of("test.after", tag)
    # and with nothing open the bound moves past what was chained (one more run passes the mark)
    with transaction.atomic():
        record("test.after", actor="fast", details={"tag": f"{tag}-next"})
    assert _pending_from() > placeholders["after"]
    assert not AuditEvent.objects.filter(seq__lt=0, details__tag=tag).exists()
    assert verify_chain().ok


def test_the_application_role_can_append_and_chain_but_not_change_or_unguard(db):
    """The role setup in docs/audit.md: INSERT and UPDATE on events (the guard lets only the
    chainer's assignment through), the placeholder sequence, UPDATE on the head row, owning nothing."""
    _raw("CREATE ROLE audit_app_probe NOLOGIN")
    _raw("GRANT USAGE ON SCHEMA public TO audit_app_probe")
    _raw("GRANT SELECT, INSERT, UPDATE ON audit_auditevent TO audit_app_probe")
    _raw("GRANT USAGE ON SEQUENCE audit_pending_seq TO audit_app_probe")
    _raw("GRANT SELECT, UPDATE ON audit_audithead TO audit_app_probe")
    _raw("SET ROLE audit_app_probe")
    try:
        record("test.event", actor="app-role", details={"tag": "app-role"})  # appends work
        ensure_chained()  # and so does chaining
        event = AuditEvent.objects.get(details__tag="app-role")
        assert event.seq > 0
        for statement, refusal in (("UPDATE audit_auditevent SET actor = 'x' WHERE seq = %s", "append-only"),
                                   ("DELETE FROM audit_auditevent WHERE seq = %s", "permission denied"),
                                   ("ALTER TABLE audit_auditevent DISABLE TRIGGER USER", "must be owner"),
                                   ("TRUNCATE audit_auditevent", "permission denied")):
            with pytest.raises(Exception, match=refusal), transaction.atomic():
                _raw(statement, [event.seq] if "%s" in statement else None)
    finally:
        _raw("RESET ROLE")
    assert AuditEvent.objects.get(seq=event.seq).actor == "app-role"


@pytest.mark.django_db(transaction=True)
def test_parallel_verification_finds_what_the_single_pass_finds():
    """Large logs are verified by several server processes over seq ranges; the result is the same."""
    for i in range(12):
        record("test.parallel", actor="tester", details={"i": i})
    ensure_chained()
    events = list(AuditEvent.objects.filter(action="test.parallel").order_by("-seq")[:12])[::-1]
    single = verify_chain(workers=1)
    parallel = verify_chain(workers=3, parallel_min=0)
    assert single.ok and parallel.ok
    assert (parallel.events, parallel.head_hash) == (single.events, single.head_hash)
    # an altered event, committed, is found at its seq by both; then put back as it was
    target = events[5]
    original = AuditEvent.objects.get(seq=target.seq).actor
    try:
        _tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [target.seq])
        for workers in (1, 2, 3, 4):
            result = verify_chain(workers=workers, parallel_min=0)
            assert result.first_broken_seq == target.seq, (workers, result)
    finally:
        _tamper("UPDATE audit_auditevent SET actor = %s WHERE seq = %s", [original, target.seq])
    assert verify_chain(workers=3, parallel_min=0).ok
