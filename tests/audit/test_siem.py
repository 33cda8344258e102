"""SIEM forwarding (audit/siem.py): real collectors on loopback, a real Celery worker.

The collectors are processes (tests/support/siem_listener.py) the tests SIGKILL and start again:
an RFC 5424 syslog listener over TLS (certificate from a CA made in the test) and an HTTPS JSON
lines listener. Every event arrives, in order; duplicates appear only across an outage and are
dropped by seq.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import pytest
from django.db import transaction

from audit.chainer import chain_pending
from audit.models import AuditEvent, AuditHead, SiemCursor
from audit.services import record
from audit.siem import (
    collector_statuses,
    events_after,
    forward_all,
    forward_one_batch,
    siem_pause,
    siem_resume,
    sync_cursors,
)
from audit.siem_transports import HttpsCollector, SyslogCollector, octet_frame, syslog_message
from tests.audit.siem_helpers import TOKEN, Listener, make_ca
from tests.fixtures.celery import wait_until
from tests.support.siem_listener import parse_message


def _record(count: int, tag: str) -> None:
    with transaction.atomic():
        for index in range(count):
            record("test.siem", actor="alice", actor_ip="10.0.0.1", object_type="thing", object_id=index,
                   outcome="ok", details={"tag": tag, "index": index, "text": 'quote " bracket ] slash \\ é'})
    # Events get their seq from the chainer (audit/chainer.py); inside a test's transaction no
    # on_commit runs it, so chain here, as the beat task would.
    chain_pending()


def _head() -> int:
    return AuditHead.objects.get(pk=1).seq


def _in_order_without_loss(seqs: list[int], start: int, end: int) -> None:
    """Every seq in start..end arrived; dropping repeats (by seq), they arrived ascending."""
    seen: list[int] = []
    for seq in seqs:
        if seq not in seen:
            seen.append(seq)
    wanted = [s for s in seen if start <= s <= end]
    assert wanted == list(range(start, end + 1)), f"missing or out of order: {sorted(set(range(start, end + 1)) - set(wanted))[:10]}"


# --- the message format (no server) ---------------------------------------------------------------

def test_syslog_frame_is_rfc5424_with_escaped_structured_data():
    # given an event whose values hold the characters SD-PARAM values must escape
    import datetime

    event = {"seq": 7, "ts": datetime.datetime(2026, 11, 1, 9, 30, 0, 1, tzinfo=datetime.UTC), "actor": 'a"b]c\\d',
             "actor_ip": None, "action": "request.approved", "object_type": "request", "object_id": "42",
             "instance": "demo", "database": "app", "statement": "", "request_id": 42, "approvers": ["bob"],
             "outcome": "denied", "details": {"x": "é"}, "prev_hash": "0" * 64, "hash": "ab" * 32}
    # when it is framed
    message = syslog_message(event, hostname="portal-1")
    frame = octet_frame(message)
    # then the frame is counted in octets and parses back as RFC 5424
    length, _, rest = frame.partition(b" ")
    assert int(length) == len(rest) == len(message)
    parsed = parse_message(rest)
    assert parsed["pri"] == 13 * 8 + 4  # log audit, warning for a denial
    assert parsed["ts"] == "2026-11-01T09:30:00.000001Z"
    assert (parsed["host"], parsed["app"], parsed["msgid"]) == ("portal-1", "dbportal", "request.approved")
    assert parsed["sd"]["audit@32473"] == {"seq": "7", "hash": "ab" * 32, "prev_hash": "0" * 64,
                                           "action": "request.approved", "actor": 'a"b]c\\d', "outcome": "denied",
                                           "object": "request:42"}
    assert parsed["msg"]["details"] == {"x": "é"} and parsed["msg"]["seq"] == 7


# --- in-process forwarding against real listeners --------------------------------------------------

@pytest.fixture
def tls_files(tmp_path):
    return make_ca(tmp_path / "pki")


@pytest.fixture
def listeners():
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.kill()


def test_events_after_stops_at_the_head_and_at_a_gap(db):
    # given events in the log
    _record(3, "gap")
    head = _head()
    # then a batch never goes past the head, and is a run continuing the cursor
    run = events_after(head - 3, 10)
    assert [e["seq"] for e in run] == [head - 2, head - 1, head]
    assert events_after(head, 10) == []
    assert [e["seq"] for e in events_after(head - 3, 2)] == [head - 2, head - 1]


def test_tls_syslog_delivers_in_order_and_a_wrong_ca_is_refused(db, settings, tmp_path, tls_files, listeners):
    # given a TLS syslog collector whose certificate our CA signed
    listener = Listener("syslog", tmp_path / "syslog.jsonl", tls=tls_files).start()
    listeners.append(listener)
    settings.SIEM_SYSLOG = f"tcp+tls://127.0.0.1:{listener.port}"
    settings.SIEM_SYSLOG_CA_FILE = tls_files["ca"]
    settings.SIEM_HTTPS_URL = None
    settings.SIEM_BATCH_SIZE = 1000
    _record(5, "tls")
    # when the forwarder runs
    forward_all(budget_seconds=60)
    # then every event up to the head arrived, in order, with its hash in the structured data
    head = _head()
    cursor = SiemCursor.objects.get(name="syslog")
    received = listener.received()
    assert not [r for r in received if "error" in r]
    assert [r["msg"]["seq"] for r in received] == list(range(1, cursor.last_seq + 1))
    assert cursor.last_seq >= head - 1  # the started event may come after the batch was read
    hashes = dict(AuditEvent.objects.filter(seq__lte=cursor.last_seq).values_list("seq", "hash"))
    assert all(r["sd"]["audit@32473"]["hash"] == hashes[r["msg"]["seq"]] for r in received)
    started = AuditEvent.objects.filter(action="audit.forwarding_started", object_id="syslog").last()
    assert started.outcome == "ok" and started.details["destination"] == settings.SIEM_SYSLOG
    # and forwarding its own events makes no new work: caught up, further runs record and send nothing
    assert cursor.last_seq == head
    forward_all(budget_seconds=10)
    forward_all(budget_seconds=10)
    chain_pending()
    assert _head() == head and len(listener.received()) == len(received)

    # when the collector's certificate chains to another CA
    other = make_ca(tmp_path / "other", name="other")
    settings.SIEM_SYSLOG_CA_FILE = other["ca"]
    _record(1, "wrong-ca")
    before = SiemCursor.objects.get(name="syslog")
    assert forward_one_batch(SyslogCollector.from_url(settings.SIEM_SYSLOG, other["ca"])) == "failed"
    # then nothing goes forward: the cursor steps back over the last batch (a syslog close says the
    # collector read it, not that it kept it), the failure is recorded once with the reason, and the
    # next try waits
    cursor = SiemCursor.objects.get(name="syslog")
    assert before.batch_from < before.last_seq
    assert cursor.last_seq == before.batch_from and cursor.state == "failing" and "certificate" in cursor.last_error
    failed = AuditEvent.objects.filter(action="audit.forwarding_failed", object_id="syslog")
    assert failed.count() == 1 and failed.get().outcome == "failed"
    assert (failed.get().details["cursor"], failed.get().details["resend_from"]) == (before.last_seq, before.batch_from)
    assert forward_one_batch(SyslogCollector.from_url(settings.SIEM_SYSLOG, other["ca"])) == "waiting"


def test_a_collector_outside_the_allowed_targets_is_never_dialled(db, settings):
    # given an HTTPS collector on an address PORTAL_ALLOWED_TARGETS does not list, and a metadata one
    settings.SIEM_SYSLOG = None
    settings.ALLOWED_TARGETS = ["127.0.0.0/8"]
    for url in ("https://10.9.9.9:8443/ingest", "https://169.254.169.254/latest"):
        SiemCursor.objects.all().delete()
        settings.SIEM_HTTPS_URL = url
        _record(1, "refused")
        # when the forwarder runs
        forward_all(budget_seconds=5)
        # then the batch is refused before any connection, the cursor stays, and it is recorded
        cursor = SiemCursor.objects.get(name="https")
        assert cursor.state == "failing" and cursor.last_error.startswith("refused:"), cursor.last_error
        assert cursor.last_seq == 0
        chain_pending()
        event = AuditEvent.objects.filter(action="audit.forwarding_failed", object_id="https").last()
        assert event.details["reason"] == cursor.last_error


def test_https_collector_gets_json_lines_with_the_token(db, settings, tmp_path, tls_files, listeners):
    # given an HTTPS collector that wants a bearer token
    listener = Listener("https", tmp_path / "https.jsonl", tls=tls_files).start()
    listeners.append(listener)
    settings.SIEM_SYSLOG = None
    settings.SIEM_HTTPS_URL = f"https://127.0.0.1:{listener.port}/ingest"
    settings.SIEM_HTTPS_CA_FILE = tls_files["ca"]
    settings.SIEM_HTTPS_TOKEN = "wrong"
    settings.SIEM_BATCH_SIZE = 1000
    _record(3, "https")
    # when the token is wrong: a 401 is a failure, nothing moves
    forward_all(budget_seconds=10)
    cursor = SiemCursor.objects.get(name="https")
    assert (cursor.state, cursor.last_seq, cursor.last_error) == ("failing", 0, "answered HTTP 401")
    # when the right token is configured (and the backoff is over)
    settings.SIEM_HTTPS_TOKEN = TOKEN
    SiemCursor.objects.filter(name="https").update(next_attempt_at=None)
    assert HttpsCollector(url=settings.SIEM_HTTPS_URL).destination == f"https://127.0.0.1:{listener.port}"
    forward_all(budget_seconds=30)
    # then every event arrives as one JSON line each, in order, and the recovery is recorded
    cursor = SiemCursor.objects.get(name="https")
    received = listener.received()
    assert {r["content_type"] for r in received} == {"application/x-ndjson"}
    assert [r["msg"]["seq"] for r in received] == list(range(1, cursor.last_seq + 1))
    assert cursor.state == "ok" and cursor.last_seq >= _head() - 1
    assert AuditEvent.objects.filter(action="audit.forwarding_recovered", object_id="https").exists()


def test_pause_and_resume_are_audited_and_hold_the_cursor(db, settings, people, tmp_path, tls_files, listeners):
    # given a configured collector
    listener = Listener("syslog", tmp_path / "syslog.jsonl", tls=tls_files).start()
    listeners.append(listener)
    settings.SIEM_SYSLOG = f"tcp+tls://127.0.0.1:{listener.port}"
    settings.SIEM_SYSLOG_CA_FILE = tls_files["ca"]
    settings.SIEM_HTTPS_URL = None
    forward_all(budget_seconds=30)
    # when a platform admin pauses it and events are written
    siem_pause(name="syslog", actor=people["admin"], actor_ip="10.1.1.1", reason="collector maintenance")
    stopped_at = SiemCursor.objects.get(name="syslog").last_seq
    _record(4, "paused")
    forward_all(budget_seconds=5)
    # then nothing is sent, and the lag shows
    status = {s.name: s for s in collector_statuses()}["syslog"]
    assert status.state == "paused" and status.last_seq == stopped_at and status.lag >= 4
    # when resumed, everything follows
    siem_resume(name="syslog", actor=people["admin"], actor_ip="10.1.1.1")
    forward_all(budget_seconds=30)
    assert SiemCursor.objects.get(name="syslog").last_seq >= _head() - 1
    chain_pending()
    paused = AuditEvent.objects.filter(action="audit.forwarding_paused").last()
    resumed = AuditEvent.objects.filter(action="audit.forwarding_resumed").last()
    assert (paused.actor, paused.outcome, paused.actor_ip) == ("admin", "ok", "10.1.1.1")
    assert paused.details["reason"] == "collector maintenance"
    assert (resumed.actor, resumed.outcome) == ("admin", "ok")
    # and the forwarder's own events are forwarded too
    assert "audit.forwarding_paused" in {r["msg"]["action"] for r in listener.received()}


def test_a_collector_no_longer_configured_is_stopped_once(db, settings):
    # given a cursor of a collector the environment no longer names
    settings.SIEM_SYSLOG = None
    settings.SIEM_HTTPS_URL = None
    SiemCursor.objects.create(name="syslog", destination="tcp://127.0.0.1:1", last_seq=3)
    # when the forwarder runs twice
    forward_all(budget_seconds=1)
    forward_all(budget_seconds=1)
    # then one stop is recorded
    assert SiemCursor.objects.get(name="syslog").state == "stopped"
    stops = AuditEvent.objects.filter(action="audit.forwarding_stopped", object_id="syslog")
    assert stops.count() == 1 and stops.get().details["reason"] == "no longer configured"


class _ReadsAndForgets:
    """A syslog collector that reads every frame, closes cleanly, and keeps nothing: what a collector
    killed between reading a batch and storing it looks like from the sender's side."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                with conn:
                    while conn.recv(65536):
                        pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone may not)
        self.server.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_a_syslog_collector_that_dies_after_reading_a_batch_gets_it_again(db, settings, tmp_path, listeners):
    # given a syslog collector that acknowledges a batch by its close and then dies without keeping it
    forgetful = _ReadsAndForgets()
    settings.SIEM_SYSLOG = f"tcp://127.0.0.1:{forgetful.port}"
    settings.SIEM_HTTPS_URL = None
    settings.SIEM_BATCH_SIZE = 4
    _record(6, "forgotten")
    collector = SyslogCollector.from_url(settings.SIEM_SYSLOG, None)
    sync_cursors({"syslog": collector})
    assert forward_one_batch(collector) == "sent" and forward_one_batch(collector) == "sent"
    cursor = SiemCursor.objects.get(name="syslog")
    first_end, end = cursor.batch_from, cursor.last_seq  # two batches acknowledged by a close
    assert first_end == 4 and end > first_end
    forgetful.close()
    # when the next attempt finds it gone
    _record(1, "after")
    assert forward_one_batch(collector) == "failed"
    # then the cursor steps back over the last batch only: the collector read the earlier one to the
    # end of its connection and then accepted and read another, so it was alive after it (a syslog
    # collector keeps what it read before it closes; what one buffers past its close, no syslog
    # acknowledgement can tell)
    cursor = SiemCursor.objects.get(name="syslog")
    assert cursor.last_seq == first_end and cursor.state == "failing"
    # and once a collector answers at that address again, the batch it may have lost comes again
    listener = Listener("syslog", tmp_path / "back.jsonl").start()
    listeners.append(listener)
    settings.SIEM_SYSLOG = f"tcp://127.0.0.1:{listener.port}"
    collector = SyslogCollector.from_url(settings.SIEM_SYSLOG, None)
    SiemCursor.objects.filter(name="syslog").update(next_attempt_at=None)
    while forward_one_batch(collector) == "sent":
        pass
    assert [r["msg"]["seq"] for r in listener.received()][:end - first_end] == list(range(first_end + 1, end + 1))
    assert SiemCursor.objects.get(name="syslog").last_seq == _head()


# --- the worker: an outage mid-stream --------------------------------------------------------------

def test_worker_forwards_through_a_collector_outage_without_loss(transactional_db, celery_workers, tmp_path,
                                                                  tls_files, listeners):
    # given a TLS syslog collector and an HTTPS collector, and a worker whose beat forwards to both
    syslog = Listener("syslog", tmp_path / "syslog.jsonl", tls=tls_files).start()
    https = Listener("https", tmp_path / "https.jsonl", tls=tls_files).start()
    listeners.extend([syslog, https])
    _record(30, "before")
    worker = celery_workers.start(env={
        "PORTAL_SIEM_SYSLOG": f"tcp+tls://127.0.0.1:{syslog.port}", "PORTAL_SIEM_SYSLOG_CA_FILE": str(tls_files["ca"]),
        "PORTAL_SIEM_HTTPS_URL": f"https://127.0.0.1:{https.port}/ingest", "PORTAL_SIEM_HTTPS_TOKEN": TOKEN,
        "PORTAL_SIEM_HTTPS_CA_FILE": str(tls_files["ca"]), "PORTAL_SIEM_BATCH_SIZE": "3",
        "PORTAL_SIEM_INTERVAL_SECONDS": "0.3", "PORTAL_SIEM_BACKOFF_MAX_SECONDS": "1",
        "PORTAL_SIEM_TIMEOUT_SECONDS": "3"})

    def caught_up(listener: Listener, name: str) -> bool:
        cursor = SiemCursor.objects.filter(name=name).first()
        return bool(cursor and cursor.last_seq >= _head() - 5 and listener.seqs()
                    and listener.seqs()[-1] == cursor.last_seq)

    # when the collectors are killed while events stream
    wait_until(lambda: len(syslog.seqs()) >= 3 and len(https.seqs()) >= 3, timeout=90,
               message=f"the first batches\n{worker.tail()}")
    syslog.kill()
    https.kill()
    _record(40, "during")
    # then the forwarder notices, records the failure once per collector, and the cursor waits
    wait_until(lambda: SiemCursor.objects.filter(state="failing").count() == 2, timeout=60,
               message=f"both collectors failing\n{worker.tail()}")
    held = {c.name: c.last_seq for c in SiemCursor.objects.all()}
    assert all(seq < _head() for seq in held.values())
    # when they come back on the same ports and more events are written
    syslog.start()
    https.start()
    _record(10, "after")
    # then everything arrives, in order, none lost
    wait_until(lambda: caught_up(syslog, "syslog") and caught_up(https, "https"), timeout=120,
               message=f"both collectors caught up\n{worker.tail()}")
    last = min(c.last_seq for c in SiemCursor.objects.all())
    for listener in (syslog, https):
        assert not [r for r in listener.received() if "error" in r]
        _in_order_without_loss(listener.seqs(), 1, last)
    for name in ("syslog", "https"):
        cursor = SiemCursor.objects.get(name=name)
        assert cursor.state == "ok" and cursor.failures == 0
        assert AuditEvent.objects.filter(action="audit.forwarding_failed", object_id=name).count() == 1
        assert AuditEvent.objects.filter(action="audit.forwarding_recovered", object_id=name).count() == 1
    # and each frame's structured data carries the event's seq and hash as stored
    hashes = dict(AuditEvent.objects.filter(seq__lte=last).values_list("seq", "hash"))
    for frame in syslog.received():
        data = frame["sd"]["audit@32473"]
        assert data["hash"] == hashes.get(int(data["seq"]), data["hash"])
        assert json.dumps(frame["msg"]["seq"]) == data["seq"]


# --- the backlog on /healthz, /metrics, the API; the lag alert -------------------------------------

def test_a_collector_down_shows_its_lag_and_raises_the_alert_once(db, client, settings, people, mailoutbox,
                                                                  django_capture_on_commit_callbacks,
                                                                  django_assert_max_num_queries):
    # given a syslog collector nobody listens on (port 1 of loopback refuses) and a low alert threshold
    settings.SIEM_SYSLOG = "tcp://127.0.0.1:1"
    settings.SIEM_HTTPS_URL = None
    settings.SIEM_LAG_ALERT = 2
    people["admin"].email = "admin@example.com"
    people["admin"].save()
    _record(5, "down")
    # when the forwarder tries twice (the second time after the backoff)
    with django_capture_on_commit_callbacks(execute=True):
        assert forward_one_batch(SyslogCollector.from_url(settings.SIEM_SYSLOG, None)) == "waiting"  # no cursor yet
        forward_all(budget_seconds=5)
        SiemCursor.objects.filter(name="syslog").update(next_attempt_at=None)
        forward_all(budget_seconds=5)
    cursor = SiemCursor.objects.get(name="syslog")
    lag = _head() - cursor.last_seq
    assert cursor.state == "failing" and cursor.failures == 2 and "could not connect" in cursor.last_error
    # then the lag alert was raised once, and the platform admins mailed
    lagging = AuditEvent.objects.filter(action="audit.forwarding_lagging", object_id="syslog")
    assert lagging.count() == 1 and lagging.get().outcome == "lagging"
    assert AuditEvent.objects.filter(action="audit.forwarding_failed", object_id="syslog").count() == 1
    assert [m.to for m in mailoutbox] == [["admin@example.com"]] and "behind" in mailoutbox[0].subject
    # and /healthz shows the backlog without turning unhealthy or naming the destination
    health = client.get("/healthz")
    assert health.status_code in (200, 503) and health.json()["siem"]["syslog"]["state"] == "failing"
    assert health.json()["siem"]["syslog"]["lag"] >= lag and "127.0.0.1:1" not in health.content.decode()
    assert "siem" not in health.json()["down"]
    # and /metrics has the gauges
    metrics = client.get("/metrics").content.decode()
    assert 'dbportal_siem_failing{collector="syslog"} 1.0' in metrics
    assert f'dbportal_siem_lag_events{{collector="syslog"}} {float(_head() - cursor.last_seq)}' in metrics
    # and the API shows it to a platform admin only, in a bounded number of queries
    client.force_login(people["carol"])
    assert client.get("/api/v1/audit/siem/").status_code == 403
    assert client.post("/api/v1/audit/siem/syslog/pause/").status_code == 403
    client.force_login(people["admin"])
    chain_pending()  # the refusals above were recorded (access.denied); chaining them is not the list's cost
    # session, user, head, cursors (whatever the number of collectors), the session's save (3 with its savepoint)
    with django_assert_max_num_queries(7):
        body = client.get("/api/v1/audit/siem/").json()
    (syslog,) = [c for c in body["results"] if c["name"] == "syslog"]
    assert syslog["state"] == "failing" and syslog["lag"] >= lag and syslog["destination"] == "tcp://127.0.0.1:1"
    assert client.post("/api/v1/audit/siem/nosuch/pause/").status_code == 404
    assert client.post("/api/v1/audit/siem/syslog/pause/", {"reason": "x" * 501},
                       content_type="application/json").status_code == 400
    assert AuditEvent.objects.filter(action="audit.forwarding_paused").count() == 0


def test_the_forwarding_page_shows_the_cursor_and_pauses_for_admins_only(db, client, settings, people):
    # given a configured collector that is behind (nobody listens on port 1)
    settings.SIEM_SYSLOG = "tcp://127.0.0.1:1"
    settings.SIEM_HTTPS_URL = None
    _record(2, "page")
    forward_all(budget_seconds=5)
    # when a developer or an auditor tries the page or the pause
    for name in ("alice", "carol"):
        client.force_login(people[name])
        assert client.get("/audit/forwarding/").status_code == 403
        assert client.post("/audit/forwarding/syslog/pause/", {"reason": "no"}).status_code == 403
    # then nothing was paused
    assert not SiemCursor.objects.get(name="syslog").paused
    # when the platform admin opens it and pauses the collector
    client.force_login(people["admin"])
    page = client.get("/audit/forwarding/")
    assert page.status_code == 200 and b"tcp://127.0.0.1:1" in page.content and b"failing" in page.content
    response = client.post("/audit/forwarding/syslog/pause/", {"reason": "collector moved"})
    # then it is paused, by them, audited with the reason, and the page offers resume
    assert response.status_code == 302
    cursor = SiemCursor.objects.get(name="syslog")
    assert cursor.paused and cursor.paused_by == "admin"
    assert b"Resume" in client.get("/audit/forwarding/").content
    assert client.post("/audit/forwarding/other/pause/").status_code == 404
    chain_pending()
    events = list(AuditEvent.objects.filter(action="audit.forwarding_paused").values("actor", "outcome", "details"))
    assert events == [{"actor": "admin", "outcome": "ok",
                       "details": {"collector": "syslog", "cursor": cursor.last_seq, "reason": "collector moved"}}]


def test_plain_tcp_syslog_delivers_octet_counted_frames(db, settings, tmp_path, listeners):
    # given a syslog collector without TLS
    listener = Listener("syslog", tmp_path / "plain.jsonl").start()
    listeners.append(listener)
    settings.SIEM_SYSLOG = f"tcp://127.0.0.1:{listener.port}"
    settings.SIEM_HTTPS_URL = None
    settings.SIEM_BATCH_SIZE = 4  # several connections, one per batch
    _record(9, "plain")
    # when the forwarder runs
    sent = forward_all(budget_seconds=30)
    # then every event up to the cursor arrived once, in order, well-formed, over several batches
    cursor = SiemCursor.objects.get(name="syslog")
    received = listener.received()
    assert not [r for r in received if "error" in r]
    assert [r["msg"]["seq"] for r in received] == list(range(1, cursor.last_seq + 1))
    assert cursor.last_seq == _head() and sent["syslog"] >= 3
