"""Test-only Celery tasks that bind and log structlog context, loaded into a real worker with
`celery_workers.start(include=["tests.support.log_probe_tasks"])`."""

from __future__ import annotations

import structlog
from celery import shared_task

log = structlog.get_logger("tests.log_probe")


@shared_task(name="tests.log_probe.bind_and_log")
def bind_and_log(marker: str) -> None:
    # What real code does to tag a task's lines (a request id, a tenant): bind, log, forget to unbind.
    structlog.contextvars.bind_contextvars(leak_probe=marker)
    log.info("probe.bound", marker=marker)


@shared_task(name="tests.log_probe.log_only")
def log_only(marker: str) -> None:
    log.info("probe.plain", marker=marker)


@shared_task(name="tests.log_probe.fail")
def fail(marker: str) -> None:
    raise RuntimeError(f"probe failure {marker}")
