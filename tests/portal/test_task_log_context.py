"""Structured log context in a real Celery worker: each task starts clean and names itself."""

from __future__ import annotations

import ast
import json

import pytest

from portal.celery import app
from tests.fixtures.celery import wait_until

pytestmark = pytest.mark.slow

PROBES = ["tests.support.log_probe_tasks"]


def _wait_line(worker, event: str) -> dict:
    try:
        return wait_until(lambda: _lines(worker, event), timeout=60, message=f"a {event} log line")[0]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.tail()}") from None


def _lines(worker, event: str) -> list[dict]:
    """The worker's structlog records named `event`. Celery's own log format wraps each record: JSON
    (production renderer) or the event dict's repr (Celery's hijacked root logger), after "] "."""
    found = []
    for line in worker.log_text().splitlines():
        if f"'event': '{event}'" not in line and f'"event": "{event}"' not in line:
            continue
        text = line[line.index("{"):]
        record = json.loads(text) if text.startswith('{"') else ast.literal_eval(text)
        if record.get("event") == event:
            found.append(record)
    return found


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
