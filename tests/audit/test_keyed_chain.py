"""Tamper evidence that survives a database administrator (issue #16, item 3).

The chain is keyed (HMAC-SHA256 with PORTAL_AUDIT_KEYS, held outside the database) and anchored
by signed checkpoint files outside the database. These tests play the administrator: as the
cluster superuser they switch the append-only guard off, edit one event and recompute every later
hash with plain SHA-256 (the key is not theirs), in variants; verification names that event.

Each test starts from an empty log inside its own transaction (_fresh_log, rolled back at the
end), so seqs are known and the shared test log is untouched.
"""

from __future__ import annotations

import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit import checkpoints, keys
from audit.chain import GENESIS_HASH
from audit.chainer import StaleKeyring, chain_pending, ensure_chained
from audit.models import AuditEvent, AuditHead
from audit.services import audit_checkpoint, checkpoint_due, event_dict, record
from audit.verify import verify_chain

OTHER_KEY = "b3RoZXItYXVkaXQta2V5LWZvci10ZXN0cy0zMmJ5dGU="  # 32 bytes, urlsafe base64


def _raw(statement: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def _fresh_log() -> None:
    """An empty log and head (inside the test's transaction: rolled back afterwards)."""
    for table in ("audit_auditevent", "audit_auditarchive"):
        _raw(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        _raw(f"DELETE FROM {table}")
        _raw(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    _raw("UPDATE audit_audithead SET seq = 0, hash = %s, key_id = '' WHERE id = 1", [GENESIS_HASH])


def _journal(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        record("test.journey", actor="alice", object_type="request", object_id=i, outcome="ok", details={"i": i})
    ensure_chained()


def _history() -> tuple[int, int]:
    """40 events, checkpoints at the start (the key boundary), after 25 and after 41: returns
    (the seq a DBA will edit, the head seq)."""
    _fresh_log()
    _journal(25)  # seq 1..25; the chainer wrote checkpoint 1 (seq 0, the key boundary)
    audit_checkpoint(force=True)  # checkpoint 2 at seq 25; audit.checkpointed is seq 26
    _journal(15, 25)  # seq 27..41
    audit_checkpoint(force=True)  # checkpoint 3 at seq 41; audit.checkpointed is seq 42
    ensure_chained()
    head = AuditHead.objects.get(pk=1).seq
    assert head == 42 and [c.seq for c in checkpoints.load().valid] == [0, 25, 41]
    result = verify_chain()
    assert result.ok, result.problem
    return 11, head


def _dba_rewrite(target: int, *, downgrade: bool, drop_checkpoint_events: bool = False) -> None:
    """The superuser's rewrite: guard off, event `target` says mallory, every later hash recomputed
    with plain SHA-256 (and, with downgrade, marked as unkeyed: key_id ''); the head follows.
    drop_checkpoint_events: the audit.checkpointed rows after target go too, and the later
    events are renumbered to close the gaps (nothing of the checkpoints is left in the database)."""
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    rows = list(AuditEvent.objects.filter(seq__gte=target).order_by("seq"))
    if drop_checkpoint_events:
        rows = [row for row in rows if row.action != "audit.checkpointed"]
    _raw("DELETE FROM audit_auditevent WHERE seq >= %s", [target])
    prev = AuditEvent.objects.get(seq=target - 1).hash if target > 1 else GENESIS_HASH
    for offset, row in enumerate(rows):
        row.seq = target + offset
        if offset == 0:
            row.actor = "mallory"
        row.prev_hash = prev
        if downgrade:
            row.key_id = ""
        row.hash = keys.seal_event(None, event_dict(row))  # plain SHA-256: no key needed
        prev = row.hash
    AuditEvent.objects.bulk_create(rows)
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    _raw("UPDATE audit_audithead SET seq = %s, hash = %s, key_id = %s WHERE id = 1",
         [rows[-1].seq, prev, rows[-1].key_id])


def test_the_chain_is_keyed_and_the_start_is_a_signed_checkpoint(db):
    _fresh_log()
    _journal(3)
    events = list(AuditEvent.objects.filter(seq__gt=0).order_by("seq"))
    key = keys.current()
    assert [e.seq for e in events] == [1, 2, 3] and {e.key_id for e in events} == {key.id}
    for event in events:  # HMAC-SHA256 under the key; plain SHA-256 would not match
        assert event.hash == keys.seal_event(key, event_dict(event))
        assert event.hash != keys.seal_event(None, event_dict(event))
    (boundary,) = checkpoints.load().valid
    assert (boundary.number, boundary.seq, boundary.hash, boundary.key_id, boundary.next_key_id) == (
        1, 0, GENESIS_HASH, "", key.id)
    assert checkpoints.verify_signature(boundary)
    # the file is read-only and never overwritten
    path = checkpoints.store().path / boundary.name
    assert oct(path.stat().st_mode & 0o777) == "0o440"
    with pytest.raises(FileExistsError):
        checkpoints.store().put(boundary.name, b"{}")


@pytest.mark.parametrize("downgrade", [False, True], ids=["keeps-key-ids", "marks-unkeyed"])
def test_a_dba_rewrite_with_recomputed_hashes_is_named_at_the_edited_event(db, downgrade):
    target, _ = _history()
    _dba_rewrite(target, downgrade=downgrade)
    result = verify_chain()
    assert not result.ok and result.first_broken_seq == target, result.problem
    assert ("altered" in result.problem) if not downgrade else ("no key" in result.problem)
    # the command says so too, and so does an incremental check (it starts at a checkpoint that still
    # matches the database: the first one, before the rewrite)
    with pytest.raises(CommandError, match=f"at seq {target}:"):
        call_command("audit_verify")
    incremental = verify_chain(incremental=True)
    assert incremental.first_broken_seq == target and incremental.start_seq == 1


def test_a_dba_who_also_removes_the_checkpoint_records_is_still_named_at_the_edited_event(db):
    target, head = _history()
    _dba_rewrite(target, downgrade=True, drop_checkpoint_events=True)
    assert not AuditEvent.objects.filter(action="audit.checkpointed").exists()
    assert AuditHead.objects.get(pk=1).seq == head - 2
    result = verify_chain()
    assert result.first_broken_seq == target and "downgraded" in result.problem, result.problem


def test_a_whole_log_rewritten_unkeyed_is_found_from_the_key_boundary_file(db):
    """From seq 1 on, with the checkpoint records gone: nothing in the database says the log was
    ever keyed; the key boundary checkpoint (a file) does."""
    _history()
    _dba_rewrite(1, downgrade=True, drop_checkpoint_events=True)
    result = verify_chain()
    assert result.first_broken_seq == 1 and "checkpoint 1 says every event after seq 0" in result.problem


def test_a_rewrite_by_someone_holding_the_key_is_bounded_by_the_checkpoints(db):
    """Even with the key (every MAC valid), the rewritten events no longer match checkpoint 2."""
    target, _ = _history()
    key = keys.current()
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    prev = AuditEvent.objects.get(seq=target - 1).hash
    for row in AuditEvent.objects.filter(seq__gte=target).order_by("seq"):
        if row.seq == target:
            row.actor = "mallory"
        row.prev_hash = prev
        row.hash = keys.seal_event(key, event_dict(row))
        prev = row.hash
        _raw("UPDATE audit_auditevent SET actor = %s, prev_hash = %s, hash = %s WHERE seq = %s",
             [row.actor, row.prev_hash, row.hash, row.seq])
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    _raw("UPDATE audit_audithead SET hash = %s WHERE id = 1", [prev])
    result = verify_chain()
    assert result.first_broken_seq == 25 and "after seq 0 and at or before seq 25" in result.problem


def test_a_removed_tail_is_found_from_the_checkpoint(db):
    _, head = _history()
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    _raw("DELETE FROM audit_auditevent WHERE seq > 30")
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    _raw("UPDATE audit_audithead SET seq = 30, hash = (SELECT hash FROM audit_auditevent WHERE seq = 30) "
         "WHERE id = 1")
    result = verify_chain()
    assert result.first_broken_seq == 31 and "events removed" in result.problem


def test_an_edited_checkpoint_file_is_reported(db):
    _history()
    store = checkpoints.store()
    name = store.names()[1]
    path = store.path / name
    os.chmod(path, 0o640)
    path.write_bytes(path.read_bytes().replace(b'"seq": 25', b'"seq": 24'))
    result = verify_chain()
    assert not result.ok and result.first_broken_seq is None
    assert any("checkpoint file" in p and "name does not match" in p for p in result.checkpoint_problems)
    # re-signed content cannot be made without the key: a changed hash fails the signature
    path.write_bytes(path.read_bytes().replace(b'"seq": 24', b'"seq": 25').replace(b'"hash": "', b'"hash": "0'))
    assert any("signature does not verify" in p for p in verify_chain().checkpoint_problems)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["first", "middle", "newest"])
def test_a_deleted_checkpoint_file_is_reported(db, which):
    _history()
    store = checkpoints.store()
    name = store.names()[which]
    os.remove(store.path / name)
    result = verify_chain()
    assert not result.ok
    assert any("missing" in p for p in result.checkpoint_problems), result.checkpoint_problems
    with pytest.raises(CommandError, match="checkpoint"):
        call_command("audit_verify")


def test_incremental_verification_starts_at_the_newest_good_checkpoint(db):
    _, head = _history()
    _journal(5, 100)
    result = verify_chain(incremental=True)
    assert result.ok and result.start_seq == 42 and result.events == AuditHead.objects.get(pk=1).seq - 41
    assert verify_chain().events >= head


def test_a_checkpoint_is_due_after_n_events_not_after_its_own_record(db, settings):
    _fresh_log()
    settings.AUDIT_CHECKPOINT_EVENTS = 5
    settings.AUDIT_CHECKPOINT_MINUTES = 60
    _journal(3)
    assert not checkpoint_due()  # 3 events since the key boundary checkpoint (seq 0), fewer than 5
    _journal(2, 3)
    assert checkpoint_due()
    written = audit_checkpoint()
    assert written is not None and written.seq == 5
    ensure_chained()
    # the checkpoint's own record (seq 6) does not make the next one due: no endless series
    assert AuditEvent.objects.get(seq=6).action == "audit.checkpointed"
    assert not checkpoint_due() and audit_checkpoint() is None
    _journal(4, 5)
    assert not checkpoint_due()
    _journal(1, 9)
    assert checkpoint_due()


def test_events_from_before_keys_stay_verifiable_and_cannot_be_extended_unkeyed(db, settings):
    _fresh_log()
    settings.AUDIT_KEYS = []
    _journal(4)  # the old, unkeyed chain
    assert set(AuditEvent.objects.filter(seq__gt=0).values_list("key_id", flat=True)) == {""}
    assert verify_chain().ok
    settings.AUDIT_KEYS = [OTHER_KEY]
    _journal(3, 4)  # the upgrade: boundary checkpoint at seq 4, then keyed
    key = keys.current()
    assert list(AuditEvent.objects.filter(seq__gt=0).order_by("seq").values_list("key_id", flat=True)) == (
        [""] * 4 + [key.id] * 3)
    boundary = checkpoints.load().valid[-1]
    assert (boundary.seq, boundary.key_id, boundary.next_key_id) == (4, "", key.id)
    assert verify_chain().ok
    # an administrator re-hashes seq 6 onwards as unkeyed: found at 6
    _dba_rewrite(6, downgrade=True)
    result = verify_chain()
    assert result.first_broken_seq == 6 and "downgraded" in result.problem


def test_rotation_moves_forward_and_a_stale_process_chains_nothing(db, settings):
    _fresh_log()
    _journal(2)
    old = keys.current()
    settings.AUDIT_KEYS = [OTHER_KEY, *settings.AUDIT_KEYS]  # the new key first, the old one after it
    new = keys.current()
    call_command("rotate_audit_key")
    ensure_chained()
    rotated = AuditEvent.objects.get(action="audit.key_rotated")
    assert rotated.outcome == "ok" and rotated.key_id == new.id and rotated.details["from_key_id"] == old.id
    _journal(2, 2)
    kids = list(AuditEvent.objects.filter(seq__gt=0).order_by("seq").values_list("key_id", flat=True))
    assert kids == [old.id, old.id, new.id, new.id, new.id]
    assert verify_chain().ok
    # a process still on the old list refuses to chain (it would go back to an older key)...
    settings.AUDIT_KEYS = settings.AUDIT_KEYS[1:]
    record("test.journey", actor="alice")
    with pytest.raises(StaleKeyring):
        chain_pending()
    assert ensure_chained() == 0  # a read in that process goes on with what is chained (logged)
    # ...and without the new key the newer events cannot be verified here
    result = verify_chain()
    assert not result.ok and result.first_broken_seq == 3 and "not configured" in result.problem


def test_an_older_key_after_a_newer_one_is_a_downgrade(db, settings):
    _fresh_log()
    old_list = list(settings.AUDIT_KEYS)
    settings.AUDIT_KEYS = [OTHER_KEY, *old_list]
    _journal(3)  # under the new key
    new = keys.current()
    old = keys.by_id(keys.keyring()[1].id)
    # someone holding the OLD key re-MACs seq 2.. with it
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    prev = AuditEvent.objects.get(seq=1).hash
    for row in AuditEvent.objects.filter(seq__gte=2).order_by("seq"):
        row.prev_hash, row.key_id = prev, old.id
        row.hash = keys.seal_event(old, event_dict(row))
        _raw("UPDATE audit_auditevent SET key_id = %s, prev_hash = %s, hash = %s WHERE seq = %s",
             [old.id, prev, row.hash, row.seq])
        prev = row.hash
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    _raw("UPDATE audit_audithead SET hash = %s, key_id = %s WHERE id = 1", [prev, old.id])
    result = verify_chain()
    assert result.first_broken_seq == 2 and new.id != old.id


@pytest.mark.parametrize("username,status", [("alice", 403), ("bob", 403), ("carol", 200), ("admin", 200)])
def test_the_api_reports_checkpoint_problems_to_auditors_only(db, people, api_for, username, status):
    _history()
    os.remove(checkpoints.store().path / checkpoints.store().names()[-1])
    response = api_for(username).get("/api/v1/audit/verify/")
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert body["ok"] is False and body["first_broken_seq"] is None and body["checkpoints"] == 2
        assert any("missing" in p for p in body["checkpoint_problems"])
        incremental = api_for(username).get("/api/v1/audit/verify/", {"incremental": "true"}).json()
        assert incremental["start_seq"] == 26 and incremental["checkpoint_problems"] == body["checkpoint_problems"]
        refused = api_for(username).get("/api/v1/audit/verify/", {"incremental": "yes"})
        assert refused.status_code == 400 and "incremental" in refused.content.decode()


def test_the_verify_page_names_a_deleted_checkpoint_file(db, people, web_for):
    _history()
    name = checkpoints.store().names()[1]
    os.remove(checkpoints.store().path / name)
    body = web_for("carol").post("/audit/verify/", HTTP_HX_REQUEST="true").content.decode()
    assert "CHECKPOINTS BROKEN" in body and "checkpoint 2 is missing" in body


WRITERS, PER_WRITER = 6, 30


@pytest.mark.django_db(transaction=True)
def test_a_reader_paging_by_seq_sees_every_event_once_in_order_while_writers_append():
    """Writers in their own transactions, chained by their after-commit chainers; a reader pages
    `seq > cursor` meanwhile (as the SIEM forwarder does): it never sees a pending event, never
    misses one that is chained later below its cursor, never sees one twice."""
    import threading

    from django.db import connections, transaction

    start = AuditHead.objects.get(pk=1).seq
    done = threading.Event()
    seen: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for i in range(PER_WRITER):
                with transaction.atomic():
                    record("test.reader", actor=f"w{index}", details={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def reader() -> None:
        cursor = start
        try:
            while True:
                finished = done.is_set()
                with connection.cursor() as c:
                    c.execute("SELECT seq, hash FROM audit_auditevent WHERE seq > %s ORDER BY seq LIMIT 50", [cursor])
                    rows = c.fetchall()
                for seq, hash_ in rows:
                    assert seq == cursor + 1 and len(hash_) == 64, (seq, cursor)  # gap-free, final
                    seen.append((seq, hash_))
                    cursor = seq
                if finished and not rows:
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ensure_chained()  # what the beat task does for a chainer that skipped at the very end
    done.set()
    watcher.join()
    assert not errors, errors
    mine = AuditEvent.objects.filter(seq__gt=start, action="test.reader").count()
    assert mine == WRITERS * PER_WRITER
    assert [s for s, _ in seen] == list(range(start + 1, AuditHead.objects.get(pk=1).seq + 1))
    assert verify_chain().ok


def test_rotate_audit_key_generate_prints_a_key_when_the_environment_holds_them(db, capsys):
    call_command("rotate_audit_key", "--generate")
    printed = capsys.readouterr().out.strip()
    assert keys.parse(printed).id not in {key.id for key in keys.keyring()}  # a new, valid key
    assert not AuditEvent.objects.filter(action="audit.key_rotated").exists()  # nothing applied


def test_rotate_audit_key_generate_with_the_key_file_puts_the_new_key_first_and_applies_it(
        db, settings, tmp_path, monkeypatch, capsys):
    _fresh_log()
    _journal(2)
    old = keys.current()
    monkeypatch.delenv("PORTAL_AUDIT_KEYS")
    settings.VAR_DIR = tmp_path
    (tmp_path / keys.KEY_FILE).write_text(",".join(settings.AUDIT_KEYS))
    call_command("rotate_audit_key", "--generate")
    stored = (tmp_path / keys.KEY_FILE).read_text().split(",")
    assert len(stored) == 2 and stored[1] == settings.AUDIT_KEYS[1] and keys.parse(stored[0]).id == keys.current().id
    assert oct((tmp_path / keys.KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert keys.current().id != old.id
    ensure_chained()
    assert AuditEvent.objects.get(action="audit.key_rotated").details["from_key_id"] == old.id
    assert verify_chain().ok


def test_a_checkpoint_store_that_fails_is_recorded_and_blocks_the_key_boundary(db, settings, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    _fresh_log()
    settings.AUDIT_CHECKPOINT_DIR = blocked
    # the key boundary cannot be written: nothing is chained with the key (the events wait, pending)
    record("test.journey", actor="alice")
    with pytest.raises(OSError):
        chain_pending()
    assert AuditHead.objects.get(pk=1).seq == 0 and _raw("SELECT count(*) FROM audit_auditevent WHERE seq < 0")[0][0] == 1
    # once the store works again the boundary is written first, then the events are chained
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "checkpoints"
    assert chain_pending() == 1 and checkpoints.latest().seq == 0
    # a regular checkpoint that cannot be written is recorded (outcome failed, the reason) and raised
    settings.AUDIT_CHECKPOINT_DIR = blocked
    with pytest.raises(OSError):
        audit_checkpoint(force=True)
    ensure_chained()
    failed = AuditEvent.objects.get(action="audit.checkpoint_failed")
    assert failed.outcome == "failed" and "Error" in failed.details["reason"]
