"""Exports and verification of a 100k-event log keep memory flat (RSS growth, not time)."""

from __future__ import annotations

import csv
import gc
import io
import json

import psutil
import pytest
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import event, record_many
from audit.verify import verify_chain

EVENTS = 100_000
# ~1.3 KB per exported row: the whole export is larger than the bound below. Words, not one run of
# letters: record_many redacts details, and portal.logging's URL pattern is quadratic in a run.
PADDING = "padding " * 138
BOUND = 100 * 1024 * 1024
ACTOR = "bulk-memory-test"
CHUNK = 5_000  # events per record_many: one statement each, a bounded list in memory


def _rss() -> int:
    return psutil.Process().memory_info().rss


@pytest.fixture(scope="module")
def big_log(django_db_setup, django_db_blocker):
    """The 100k events, appended once for the module's tests in a transaction rolled back after
    them: each test's own transaction is a savepoint inside it. (Committed, they would stay for
    every later test: the audit log refuses DELETE and TRUNCATE.) They go through the log's one
    write path, record_many, a chunk at a time."""
    with django_db_blocker.unblock(), transaction.atomic():
        last = AuditEvent.objects.order_by("-seq").first()
        start = max(timezone.now(), last.ts if last else timezone.now())
        for first in range(0, EVENTS, CHUNK):
            record_many([event("bulk.event", actor=ACTOR, object_type="row", object_id=str(i), statement=f"SELECT {i}",
                               details={"i": i, "padding": PADDING}) for i in range(first, min(first + CHUNK, EVENTS))])
        assert AuditEvent.objects.filter(actor=ACTOR).count() == EVENTS
        gc.collect()
        yield start
        transaction.set_rollback(True)


def _stream(response) -> tuple[int, int, bytes, bytes]:
    """Consume a streaming response, keeping only its size, its peak RSS growth, and its ends."""
    baseline = _rss()
    peak = 0
    size = 0
    head = b""
    tail = b""
    for index, chunk in enumerate(response.streaming_content):
        size += len(chunk)
        if not head:
            head = bytes(chunk[:4096])
        tail = bytes(chunk[-4096:])
        if index % 16 == 0:
            peak = max(peak, _rss() - baseline)
    return size, max(peak, _rss() - baseline), head, tail


@pytest.mark.slow
@pytest.mark.parametrize("export_format", ["csv", "jsonl"])
def test_export_of_100k_events_keeps_memory_flat(people, api_for, big_log, export_format):
    response = api_for("carol").get(f"/api/v1/audit/export/?format={export_format}&actor={ACTOR}")
    assert response.status_code == 200 and response.streaming
    size, growth, head, tail = _stream(response)
    assert size > BOUND  # the export is bigger than the bound: buffering it would break the bound
    assert growth < BOUND, f"RSS grew by {growth / 2**20:.1f} MiB while streaming {size / 2**20:.1f} MiB"
    if export_format == "csv":
        first = next(csv.DictReader(io.StringIO(head.decode())))  # the first 4 KB hold the header and a row
        assert first["actor"] == ACTOR and json.loads(first["details"])["i"] == 0
    else:
        last = json.loads(tail.decode().rstrip("\n").rsplit("\n", 1)[-1])
        assert last["actor"] == ACTOR and last["details"]["i"] == EVENTS - 1


@pytest.mark.slow
def test_verification_of_100k_events_keeps_memory_flat(db, big_log):
    baseline = _rss()
    result = verify_chain()
    growth = _rss() - baseline
    assert result.ok, result.problem
    assert result.events >= EVENTS
    assert growth < BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
