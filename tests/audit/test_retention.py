"""Retention (PCI DSS v4 10.5.1): monthly archives, verified before detaching, kept twelve months, then
deleted as an audited event; verification spans archive and online; auditors read archived months.

Each test rebuilds the log inside its own transaction (rolled back afterwards, so the shared log of
the other tests is untouched): a hash chain built with audit.chain, with events back-dated across
the last fifteen months and this one, then archives into its own temporary directory.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from audit import checkpoints, keys
from audit.archive import (
    ArchiveError,
    RetentionNotOver,
    _write_bytes,
    add_months,
    archive_delete,
    archive_next,
    detach,
    month_start,
    run,
)
from audit.archive_files import _manifest_fields, archive_dir
from audit.archive_verify import check_archive, verify_all
from audit.chain import GENESIS_HASH
from audit.models import AuditArchive, AuditEvent, AuditHead, SiemCursor
from audit.services import event_dict
from audit.siem import events_after
from audit.verify import verify_chain
from portal.conf import Config
from portal.errors import Conflict, PolicyViolation

MONTHS = 15
PER_MONTH = 4


def _raw(statement: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _rebuild_log(now) -> dict[str, list[AuditEvent]]:
    """Test-only: replace the log (in this test's transaction) by a valid chain whose events lie in
    each of the last MONTHS months and this one, PER_MONTH a month; returns them by period."""
    _raw("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    _raw("DELETE FROM audit_auditevent")
    _raw("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    start = add_months(month_start(now), -MONTHS)
    events, by_period, prev, seq = [], {}, GENESIS_HASH, 0
    for m in range(MONTHS + 1):
        base = add_months(start, m)
        for i in range(PER_MONTH):
            ts = base + timedelta(hours=1 + i, microseconds=7 * (i + 1))
            if ts >= now:
                break
            seq += 1
            event = AuditEvent(seq=seq, ts=ts, actor="alice" if i % 2 else "system", actor_ip="10.0.0.9",
                               action="request.submitted" if i == 0 else "sql.executed", object_type="request",
                               object_id=str(seq), instance="demo", database="app", statement="",
                               request_id=1000 + m, approvers=["bob"], outcome="ok",
                               details={"month": m, "i": i, "ratio": 0.25, "note": "é\u0001\"q"}, prev_hash=prev,
                               # the older half in chain format 1 (an upgraded portal's history)
                               chain_format=1 if m < MONTHS // 2 else 2)
            # keyed as the chainer keys (audit/keys.py), or plain SHA-256 without a key
            key = keys.current()
            event.key_id = key.id if key else keys.UNKEYED
            event.hash = prev = keys.seal_event(key, event_dict(event))
            events.append(event)
            by_period.setdefault(base.strftime("%Y-%m"), []).append(event)
    AuditEvent.objects.bulk_create(events)
    AuditHead.objects.filter(pk=1).update(seq=seq, hash=prev, key_id=events[-1].key_id)
    assert verify_chain().ok
    return by_period


@pytest.fixture
def seeded(db, settings, tmp_path):
    settings.AUDIT_ARCHIVE_DIR = tmp_path / "archive"
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "checkpoints"  # none of the shared log's: this log is rebuilt
    settings.AUDIT_ONLINE_MONTHS = 3
    settings.AUDIT_RETENTION_MONTHS = 12
    now = timezone.now()
    return now, _rebuild_log(now)


def _periods(now, first: int, last: int) -> list[str]:
    """Periods `first`..`last` months before this one (inclusive), oldest first."""
    return [add_months(month_start(now), -k).strftime("%Y-%m") for k in range(first, last - 1, -1)]


def test_run_archives_detaches_and_deletes_only_after_retention(seeded, settings, django_capture_on_commit_callbacks):
    now, by_period = seeded
    # when the retention job runs
    with django_capture_on_commit_callbacks(execute=True):
        report = run()
    # then every whole month before the three online ones is archived and detached, oldest first
    archived = _periods(now, MONTHS, 4)
    assert report.archived == archived and report.detached == archived
    # and exactly the months whose end lies more than twelve months back are deleted
    expired = [p for p in archived if add_months(month_start(by_period[p][0].ts), 13) <= now]
    assert report.deleted == expired and len(expired) == MONTHS - 12
    online_first = by_period[_periods(now, 3, 3)[0]][0].seq
    assert AuditEvent.objects.filter(seq__gt=0).order_by("seq").first().seq == online_first
    directory = settings.AUDIT_ARCHIVE_DIR
    for period in archived:
        archive = AuditArchive.objects.get(period=period)
        events = by_period[period]
        assert (archive.first_seq, archive.last_seq, archive.count) == (events[0].seq, events[-1].seq, len(events))
        assert (archive.prev_hash, archive.last_hash) == (events[0].prev_hash, events[-1].hash)
        data = directory / archive.file_name
        if period in expired:
            assert archive.status == "deleted" and not data.exists()
            continue
        assert archive.status == "detached"
        assert data.stat().st_mode & 0o777 == 0o440  # written once, read-only
        assert hashlib.sha256(data.read_bytes()).hexdigest() == archive.sha256
        assert (directory / f"{archive.file_name}.sha256").read_text() == f"{archive.sha256}  {archive.file_name}\n"
        manifest = json.loads((directory / f"audit-{period}.manifest.json").read_text())
        assert manifest["first_seq"] == archive.first_seq and manifest["sha256"] == archive.sha256
        assert manifest["prev_hash"] == events[0].prev_hash and manifest["last_hash"] == events[-1].hash
        lines = [json.loads(line) for line in gzip.open(data)]
        assert [line["seq"] for line in lines] == [e.seq for e in events]
        assert lines[0]["details"]["note"] == "é\u0001\"q"
    # and each step is an event naming the period, the range and the file's checksum
    for action, periods in (("audit.archived", archived), ("audit.detached", archived),
                            ("audit.archive_deleted", expired)):
        recorded = AuditEvent.objects.filter(action=action).order_by("seq")
        assert [e.object_id for e in recorded] == periods, action
        first = recorded[0]
        archive = AuditArchive.objects.get(period=first.object_id)
        assert first.outcome == "ok" and first.actor == "system"
        assert (first.details["first_seq"], first.details["last_seq"], first.details["sha256"]) == (
            archive.first_seq, archive.last_seq, archive.sha256)
    # and verification spans both: the online chain starts from the last archive's hash
    online = verify_chain()
    assert online.ok, online.problem
    full = verify_all()
    assert full.ok, full.problem
    assert [a["status"] for a in full.archives] == ["deleted"] * len(expired) + ["detached"] * (len(archived) - len(expired))
    # and a second run finds nothing due
    assert run().as_dict() == {"archived": [], "detached": [], "deleted": [], "waiting_for_siem": [], "busy": False}


def test_a_siem_cursor_below_the_detached_months_continues_from_the_online_log(seeded):
    # given every archivable month detached (no collector was forwarding)
    report = run()
    online_first = AuditEvent.objects.filter(seq__gt=0).order_by("seq").first().seq
    assert report.detached and online_first > 1
    # then a collector added since (cursor 0), or one sent back over a batch to below the detached
    # months, continues from the online log's first event instead of waiting at the archived range
    for cursor in (0, online_first - 2):
        assert [e["seq"] for e in events_after(cursor, 3)] == [online_first, online_first + 1, online_first + 2]
    # and a cursor inside the online log reads on as before
    assert [e["seq"] for e in events_after(online_first, 2)] == [online_first + 1, online_first + 2]


def test_months_a_siem_collector_has_not_acknowledged_stay_online(seeded, settings):
    now, by_period = seeded
    archived = _periods(now, MONTHS, 4)
    # given a forwarding collector that acknowledged only the first two archivable months
    settings.SIEM_HTTPS_URL = "https://127.0.0.1:9/collector"  # never dialled here: nothing forwards
    cursor = SiemCursor.objects.create(name="https", last_seq=by_period[archived[1]][-1].seq)
    # when retention runs, every month is archived but only those two are detached
    report = run()
    assert report.archived == archived
    assert report.detached == archived[:2] and report.waiting_for_siem == archived[2:]
    assert AuditEvent.objects.filter(seq=by_period[archived[2]][0].seq).exists()
    assert verify_all().ok
    with pytest.raises(Conflict, match="SIEM"):
        detach(AuditArchive.objects.get(period=archived[2]))
    # and once the collector catches up, the rest follow
    cursor.last_seq = AuditHead.objects.get(pk=1).seq
    cursor.save()
    assert run().detached == archived[2:]
    assert verify_all().ok


def _rewrite(path, change) -> None:
    """What someone with write access to the archive directory could do."""
    lines = [json.loads(line) for line in gzip.open(path)]
    change(lines)
    path.chmod(0o600)  # archives are written read-only
    with gzip.open(path, "wb") as handle:
        for line in lines:
            handle.write((json.dumps(line) + "\n").encode())


def test_a_tampered_archive_file_is_found_naming_the_seq(seeded):
    now, by_period = seeded
    run()
    period = _periods(now, 6, 6)[0]
    archive = AuditArchive.objects.get(period=period)
    target = by_period[period][2]
    # when one archived event's actor is changed in the file
    _rewrite(_file_of(archive), lambda lines: lines[2].update(actor="mallory"))
    # then the full verification names that event's seq, and the checksum no longer matches
    result = verify_all()
    assert not result.ok and result.first_broken_seq == target.seq
    assert "altered" in result.problem and "SHA-256" in result.problem
    # and recomputing every hash in the file does not help: the last hash and the checksum disagree
    def recompute(lines):
        prev = lines[0]["prev_hash"]
        lines[2]["actor"] = "mallory"
        for line in lines:
            line["prev_hash"] = prev
            # even with the key itself (a stronger attacker than a database administrator)
            key = keys.by_id(line["key_id"]) if line["key_id"] else None
            line["hash"] = prev = keys.seal_event(key, line)
    _rewrite(_file_of(archive), recompute)
    result = verify_all()
    assert not result.ok and result.first_broken_seq == archive.last_seq
    assert "last hash" in result.problem


def _file_of(archive):
    return archive_dir() / archive.file_name


def test_an_archive_rewritten_with_its_manifest_is_found_by_a_signed_checkpoint(seeded):
    now, by_period = seeded
    period = _periods(now, 8, 8)[0]
    anchored = by_period[period][1]
    # given a signed checkpoint (outside the database) at an event of a month that is then archived
    checkpoints.write(anchored.seq, anchored.hash, anchored.key_id, keys.current())
    run()
    archive = AuditArchive.objects.get(period=period)
    assert verify_all().ok

    # when someone holding the key rewrites the month's file with recomputed hashes, and then its
    # manifest row (the guard switched off), manifest and checksum files to match
    def rewrite(lines):
        prev = lines[0]["prev_hash"]
        lines[0]["actor"] = "mallory"
        for line in lines:
            line["prev_hash"] = prev
            line["hash"] = prev = keys.seal_event(keys.by_id(line["key_id"]), line)
    _rewrite(_file_of(archive), rewrite)
    data = _file_of(archive).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    last_hash = json.loads(gzip.decompress(data).splitlines()[-1])["hash"]
    _raw("ALTER TABLE audit_auditarchive DISABLE TRIGGER USER")
    _raw("UPDATE audit_auditarchive SET sha256 = %s, last_hash = %s, size_bytes = %s WHERE id = %s",
         [sha256, last_hash, len(data), archive.pk])
    _raw("ALTER TABLE audit_auditarchive ENABLE TRIGGER USER")
    archive.refresh_from_db()
    manifest = _file_of(archive).parent / f"audit-{period}.manifest.json"
    manifest.chmod(0o600)
    manifest.write_text(json.dumps(_manifest_fields(archive), indent=2) + "\n")
    (_file_of(archive).parent / f"{archive.file_name}.sha256").write_text(f"{sha256}  {archive.file_name}\n")
    assert check_archive(archive).ok  # the file agrees with its (rewritten) manifest row
    # then the signed checkpoint names the rewritten event's checkpointed seq
    result = verify_all()
    assert not result.ok and result.first_broken_seq == anchored.seq
    assert "signed checkpoint" in result.problem


def test_an_archive_is_verified_before_its_rows_are_detached(seeded):
    now, by_period = seeded
    # given the oldest month archived but not detached yet
    archive = archive_next()
    assert archive is not None and archive.detached_at is None
    # when its file is altered before the detach
    _rewrite(_file_of(archive), lambda lines: lines[1].update(outcome="denied"))
    # then nothing leaves the online table, and the refusal is recorded
    with pytest.raises(ArchiveError, match="not detached"):
        detach(archive)
    assert AuditEvent.objects.filter(seq__range=(archive.first_seq, archive.last_seq)).count() == archive.count
    failed = AuditEvent.objects.filter(action="audit.detached").order_by("-seq").first()
    assert failed.outcome == "failed" and failed.object_id == archive.period
    assert f"seq {archive.first_seq + 1}" in failed.details["reason"]


def test_deletion_before_retention_is_refused_and_recorded(seeded):
    now, by_period = seeded
    run()
    young = AuditArchive.objects.filter(deleted_at__isnull=True).order_by("-first_seq").first()
    assert young.retain_until > now
    # when someone deletes an archive still inside its retention
    with pytest.raises(RetentionNotOver):
        archive_delete(period=young.period)
    # then the files stay, and the refusal is an event
    assert check_archive(young).ok
    refused = AuditEvent.objects.filter(action="audit.archive_deleted").order_by("-seq").first()
    assert (refused.outcome, refused.object_id) == ("refused", young.period)
    assert "retained until" in refused.details["reason"]
    # and the database refuses it too, whoever asks
    with pytest.raises(Exception, match="retained until"), transaction.atomic():
        _raw("UPDATE audit_auditarchive SET deleted_at = now() WHERE id = %s", [young.pk])
    with pytest.raises(Exception, match="keeps every manifest"), transaction.atomic():
        _raw("DELETE FROM audit_auditarchive WHERE id = %s", [young.pk])
    with pytest.raises(Exception, match="never changed"), transaction.atomic():
        _raw("UPDATE audit_auditarchive SET sha256 = repeat('0', 64) WHERE id = %s", [young.pk])


def test_the_delete_guard_lets_only_archived_old_rows_go(seeded):
    now, by_period = seeded
    archive = archive_next()
    recent = by_period[_periods(now, 1, 1)[0]][0]
    unarchived_old = by_period[_periods(now, MONTHS - 1, MONTHS - 1)[0]][0]
    # a recent event, and an old one no archive holds, cannot be deleted
    for seq in (recent.seq, unarchived_old.seq):
        with pytest.raises(Exception, match="append-only"), transaction.atomic():
            _raw("DELETE FROM audit_auditevent WHERE seq = %s", [seq])
    # an archived one can (that is what detach does, after verifying)
    _raw("DELETE FROM audit_auditevent WHERE seq = %s", [archive.first_seq])
    # and even a forged manifest row cannot take an event of the last three months
    AuditArchive.objects.create(
        period="2999-01", first_seq=recent.seq, last_seq=recent.seq, count=1, first_ts=recent.ts, last_ts=recent.ts,
        prev_hash=recent.prev_hash, last_hash=recent.hash, file_name="x", sha256="0" * 64, size_bytes=0,
        created_at=now, created_by="mallory", verified_at=now, retain_until=now)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        _raw("DELETE FROM audit_auditevent WHERE seq = %s", [recent.seq])


def test_an_archive_file_is_never_overwritten(seeded, settings):
    directory = settings.AUDIT_ARCHIVE_DIR
    directory.mkdir(parents=True)
    _write_bytes(directory, "audit-2000-01.jsonl.gz", b"first")
    _write_bytes(directory, "audit-2000-01.jsonl.gz", b"first")  # the same bytes again: adopted
    with pytest.raises(ArchiveError, match="never overwritten"):
        _write_bytes(directory, "audit-2000-01.jsonl.gz", b"second")
    assert (directory / "audit-2000-01.jsonl.gz").read_bytes() == b"first"
    assert [p.name for p in directory.iterdir()] == ["audit-2000-01.jsonl.gz"]  # no temporary file left


def test_only_the_system_or_a_platform_admin_archives(seeded, people):
    for username in ("carol", "bob", "alice"):
        with pytest.raises(PolicyViolation):
            run(actor=people[username])
        with pytest.raises(CommandError, match="platform admin"):
            call_command("audit_archive", "run", "--actor", username)
    assert not AuditArchive.objects.exists()
    call_command("audit_archive", "run", "--actor", "admin")
    assert AuditArchive.objects.filter(created_by="admin").count() == MONTHS - 3


def test_the_command_verifies_archives_and_online_together(seeded, capsys):
    now, by_period = seeded
    call_command("audit_archive", "run")
    call_command("audit_archive", "verify")
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ok"] is True
    archive = AuditArchive.objects.filter(deleted_at__isnull=True).order_by("first_seq").first()
    _rewrite(_file_of(archive), lambda lines: lines.pop(1))
    with pytest.raises(CommandError, match=f"seq {archive.first_seq + 1}"):
        call_command("audit_archive", "verify")
    recorded = AuditEvent.objects.filter(action="audit.verified").order_by("-seq").first()
    assert recorded.outcome == "broken" and recorded.details["first_broken_seq"] == archive.first_seq + 1


def test_retention_and_online_window_below_the_minimum_are_refused():
    with pytest.raises(ImproperlyConfigured, match="PORTAL_AUDIT_RETENTION_MONTHS"):
        Config.from_env({"PORTAL_AUDIT_RETENTION_MONTHS": "11"})
    with pytest.raises(ImproperlyConfigured, match="PORTAL_AUDIT_ONLINE_MONTHS"):
        Config.from_env({"PORTAL_AUDIT_ONLINE_MONTHS": "2"})
    assert Config.from_env({}).audit_retention_months == 12


# --- reading archived months: API and pages ---------------------------------------------------------

def test_an_auditor_reads_an_archived_month_through_the_api(seeded, api_for, django_assert_max_num_queries):
    now, by_period = seeded
    run()
    period = _periods(now, 5, 5)[0]
    events = by_period[period]
    carol = api_for("carol")
    with django_assert_max_num_queries(5):  # token, the archives (one query, 12 rows), the recorded read
        listing = carol.get("/api/v1/audit/archives/")
    assert listing.status_code == 200
    rows = {row["period"]: row for row in listing.json()["results"]}
    assert rows[period]["status"] == "detached" and rows[period]["count"] == len(events)
    # the same filters and keyset paging as the online log
    with django_assert_max_num_queries(5):  # token, the archive row, the recorded read; the events come from the file
        page = carol.get(f"/api/v1/audit/archives/{period}/events/?actor=alice&page_size=1")
    assert page.status_code == 200
    body = page.json()
    alice = [e for e in events if e.actor == "alice"]
    assert [e["seq"] for e in body["results"]] == [alice[0].seq]
    assert body["results"][0]["hash"] == alice[0].hash and body["results"][0]["details"]["ratio"] == 0.25
    second = carol.get(body["next"]).json()
    assert [e["seq"] for e in second["results"]] == [alice[1].seq] and second["next"] is None
    assert carol.get(f"/api/v1/audit/archives/{period}/events/?action=request.*").json()["results"][0]["seq"] == events[0].seq
    # one archived event by its seq, as for an online one
    detail = carol.get(f"/api/v1/audit/events/{events[1].seq}/")
    assert detail.status_code == 200 and detail.json()["hash"] == events[1].hash
    assert not AuditEvent.objects.filter(seq=events[1].seq).exists()
    # each read is an audit.viewed event naming the month and the filters
    viewed = AuditEvent.objects.filter(action="audit.viewed", object_id=period).order_by("-seq").first()
    assert viewed.actor == "carol" and viewed.details["view"] == "archive"
    assert viewed.details["filters"]["action"] == "request.*"
    # exports of the archived month parse back
    export = carol.get(f"/api/v1/audit/archives/{period}/export/?format=jsonl&actor=alice")
    assert export.status_code == 200
    lines = [json.loads(line) for line in b"".join(export.streaming_content).splitlines()]
    assert [line["seq"] for line in lines] == [e.seq for e in alice]
    assert AuditEvent.objects.filter(action="audit.exported").order_by("-seq").first().details["filters"]["archive"] == period
    csv_export = carol.get(f"/api/v1/audit/archives/{period}/export/?format=csv")
    assert b"".join(csv_export.streaming_content).decode().startswith("seq,ts,actor")


def test_the_online_export_of_a_period_reaching_into_the_archive_is_whole(seeded, api_for):
    now, by_period = seeded
    run()
    # a period from an archived (detached) month into the online months
    since = _periods(now, 5, 5)[0] + "-01"
    until = (month_start(now) - timedelta(days=1)).date().isoformat()  # that whole day: up to this month
    expected = [e.seq for p, events in sorted(by_period.items()) for e in events if since <= p + "-01" <= until]
    assert any(not AuditEvent.objects.filter(seq=seq).exists() for seq in expected)  # some are detached
    carol = api_for("carol")
    export = carol.get(f"/api/v1/audit/export/?format=csv&since={since}&until={until}")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    seeded_rows = [row for row in rows if row["actor"] in ("alice", "system") and row["action"] != "audit.viewed"
                   and int(row["seq"]) in set(expected)]
    assert [int(row["seq"]) for row in seeded_rows] == expected  # one header, archive then online, in seq order
    archived = next(row for row in seeded_rows if not AuditEvent.objects.filter(seq=int(row["seq"])).exists())
    assert json.loads(archived["details"])["ratio"] == 0.25 and archived["approvers"] == '["bob"]'
    lines = b"".join(carol.get(f"/api/v1/audit/export/?format=jsonl&since={since}&until={until}&actor=alice")
                     .streaming_content).splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [
        e.seq for p, events in sorted(by_period.items()) for e in events if since <= p + "-01" <= until
        and e.actor == "alice"]


def test_archive_reads_refuse_bad_input_and_other_personas(seeded, api_for):
    now, by_period = seeded
    run()
    period = _periods(now, 5, 5)[0]
    deleted = AuditArchive.objects.filter(deleted_at__isnull=False).first().period
    for username in ("alice", "dave", "bob"):
        for path in ("/api/v1/audit/archives/", f"/api/v1/audit/archives/{period}/events/",
                     f"/api/v1/audit/archives/{period}/export/"):
            assert api_for(username).get(path).status_code == 403, (username, path)
    carol = api_for("carol")
    bad = carol.get("/api/v1/audit/archives/2026-13/events/")
    assert bad.status_code == 400 and "period" in bad.json()["errors"]
    assert carol.get("/api/v1/audit/archives/1999-01/events/").status_code == 404
    assert carol.get(f"/api/v1/audit/archives/{deleted}/events/").status_code == 410
    response = carol.get(f"/api/v1/audit/archives/{period}/events/?since=yesterday")
    assert response.status_code == 400 and "since" in response.json()["errors"]
    assert carol.get(f"/api/v1/audit/archives/{period}/export/?format=pdf").status_code == 400


def test_an_auditor_reads_an_archived_month_on_the_pages(seeded, web_for):
    now, by_period = seeded
    run()
    period = _periods(now, 5, 5)[0]
    events = by_period[period]
    page = web_for("carol").get("/audit/archives/")
    assert page.status_code == 200 and period.encode() in page.content
    month = web_for("carol").get(f"/audit/archives/{period}/?action=sql.executed")
    assert month.status_code == 200
    text = month.content.decode()
    assert all(f">{e.seq}<" in text for e in events if e.action == "sql.executed")
    assert f">{events[0].seq}<" not in text
    detail = web_for("carol").get(f"/audit/events/{events[0].seq}/")
    assert detail.status_code == 200 and events[0].hash.encode() in detail.content
    assert AuditEvent.objects.filter(action="audit.viewed", object_id=period, actor="carol").exists()
    assert web_for("alice").get(f"/audit/archives/{period}/").status_code == 403
    carol = web_for("carol")
    deleted = AuditArchive.objects.filter(deleted_at__isnull=False).first().period
    gone = carol.get(f"/audit/archives/{deleted}/")
    assert gone.status_code == 410 and b"deleted after its retention" in gone.content
    assert carol.get("/audit/archives/2026-13/").status_code == 404
    assert carol.get("/audit/archives/1999-01/").status_code == 404
    bad = carol.get(f"/audit/archives/{period}/?request=abc")
    assert bad.status_code == 200 and b"must be a request id" in bad.content
