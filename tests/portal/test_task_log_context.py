"""Worker and beat logs: JSON lines through the project's LOGGING; each task starts clean and names itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from portal.celery import app
from tests.fixtures.celery import BASE_DIR, wait_until

pytestmark = pytest.mark.slow

PROBES = ["tests.support.log_probe_tasks"]
# A record in Celery's own format ("[2024-05-01 10:00:00,123: INFO/MainProcess] ..."), which the
# worker used while it hijacked the root logger.
CELERY_FORMAT = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+: [A-Z]+/")


def _wait_line(worker, event: str) -> dict:
    try:
        return wait_until(lambda: _lines(worker, event), timeout=60, message=f"a {event} log line")[0]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.tail()}") from None


def _records(text: str) -> tuple[list[dict], list[str]]:
    """The log records of a process's output (one JSON object a line; a line that starts like one
    and does not parse fails the test), and its other lines (the banner Celery prints, blank lines)."""
    records, others = [], []
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # still being written
    for line in lines:
        if line.startswith("{"):
            records.append(json.loads(line))
        else:
            others.append(line)
    return records, others


def _lines(worker, event: str) -> list[dict]:
    """The worker's records named `event`."""
    return [record for record in _records(worker.log_text())[0] if record.get("event") == event]


def _two_tasks(worker, pool: str):
    """One task binds a value into the log context, then the next task logs."""
    first = app.send_task("tests.log_probe.bind_and_log", args=[f"{pool}-bound"])
    bound = _wait_line(worker, "probe.bound")
    second = app.send_task("tests.log_probe.log_only", args=[f"{pool}-plain"])
    return bound, _wait_line(worker, "probe.plain"), first, second


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_value_bound_in_one_task_is_gone_in_the_next(transactional_db, celery_workers, pool):
    # given a real worker process (one child for prefork, so both tasks run in the same process);
    # when one task binds a value into the log context, and the next task logs
    worker = celery_workers.start(beat=False, pool=pool, concurrency=1, include=PROBES)
    try:
        bound, plain, first, second = _two_tasks(worker, pool)
    finally:
        worker.stop()  # alone on the queue: the next case's tasks must reach its own worker
    # then the first task's line carries its value, and the next task's line does not
    assert bound["leak_probe"] == f"{pool}-bound"
    assert "leak_probe" not in plain, plain
    # and each line names its own task and id
    assert (bound.get("task_name"), bound.get("task_id")) == ("tests.log_probe.bind_and_log", first.id)
    assert (plain.get("task_name"), plain.get("task_id")) == ("tests.log_probe.log_only", second.id)


def _check_fields(records: list[dict]) -> None:
    for record in records:
        assert {"event", "level", "logger", "timestamp"} <= set(record), record
    # and none is in Celery's format: not even wrapped in one (its format, then the JSON)
    assert not [r for r in records if CELERY_FORMAT.match(str(r["event"]))]


def test_worker_and_its_beat_write_json_lines(transactional_db, celery_workers):
    # given a prefork worker with its beat, as `manage.py run` runs them (there: two processes)
    worker = celery_workers.start(beat=True, pool="prefork", concurrency=1, include=PROBES)
    try:
        # when a task logs and succeeds, another fails, and beat sends its scheduled tasks
        plain = app.send_task("tests.log_probe.log_only", args=["json"])
        failing = app.send_task("tests.log_probe.fail", args=["json"])
        failed = wait_until(lambda: [r for r in _records(worker.log_text())[0]
                                     if r.get("task_id") == failing.id and r["level"] == "error"],
                            timeout=60, message=f"the failure of {failing.id}\n{worker.tail()}")[0]
        wait_until(lambda: [r for r in _records(worker.log_text())[0] if r["logger"] == "celery.beat"
                            and r["event"].startswith("Scheduler: Sending due task")],
                   timeout=60, message=f"beat sending a task\n{worker.tail()}")
    finally:
        worker.stop()
    records, others = _records(worker.log_text())
    # then every log line is a JSON object with the event, its level, logger and time
    _check_fields(records)
    assert not [line for line in others if CELERY_FORMAT.match(line)], worker.tail()
    events = {(r["logger"], r["event"]) for r in records}
    assert any(event.endswith(" ready.") for logger, event in events if logger == "celery.apps.worker"), events
    # the task's own line names the task, and so do Celery's lines about running it
    probe = next(r for r in records if r["event"] == "probe.plain")
    assert (probe["level"], probe["logger"], probe["marker"]) == ("info", "tests.log_probe", "json")
    assert (probe["task_name"], probe["task_id"]) == ("tests.log_probe.log_only", plain.id)
    succeeded = next(r for r in records if r["logger"] == "celery.app.trace" and r.get("task_id") == plain.id)
    assert "succeeded" in succeeded["event"] and succeeded["task_name"] == "tests.log_probe.log_only"
    assert any(r["logger"] == "celery.worker.strategy" and plain.id in r["event"] and "received" in r["event"]
               for r in records)
    # a failure keeps its traceback, as text in the record
    assert failed["task_name"] == "tests.log_probe.fail"
    assert "Traceback (most recent call last)" in failed["exception"]
    assert "RuntimeError: probe failure json" in failed["exception"]
    # and the embedded beat's lines are records too
    assert ("celery.beat", "beat: Starting...") in events


def test_beat_alone_writes_json_lines(transactional_db, celery_workers, tmp_path):
    # given `celery beat` on its own, as `manage.py run` starts it
    log_path = tmp_path / "beat.log"
    with open(log_path, "w") as log:
        beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO",
                                 "--schedule", str(tmp_path / "beat-schedule")],
                                cwd=BASE_DIR, env=celery_workers.env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            # when it sends its first due task (the outbox sweep, every second in tests)
            wait_until(lambda: [r for r in _records(log_path.read_text())[0]
                                if r["event"].startswith("Scheduler: Sending due task")],
                       timeout=60, message=f"beat sending a task\n{log_path.read_text()[-3000:]}")
        finally:
            beat.terminate()
            beat.wait(timeout=30)
    # then its log lines are JSON records too
    records, others = _records(log_path.read_text())
    _check_fields(records)
    assert not [line for line in others if CELERY_FORMAT.match(line)], others
    assert {r["logger"] for r in records} >= {"celery.beat"}
