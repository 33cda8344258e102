"""Per-instance beat jobs fan out: one task per instance, spread over the workers.

A beat job (drift scan, inventory refresh, status, replica health, activity samples) enqueues one
task per instance instead of looping over the instances inside one task, so a slow or hung
cluster holds only its own task (bounded by its connection and statement timeouts and a soft
time limit), and the others run on the other worker slots meanwhile.

A job still running for an instance is not started twice: each per-instance task takes a
session-level advisory lock on the portal database, `pg_try_advisory_lock(job, instance_id)`,
and skips when another worker holds it. The lock belongs to the worker's database session, so a
worker that dies mid-scan releases it with its connection; nothing is left to clean up. The two
int4 form keeps these keys apart from any single bigint advisory key used elsewhere.
Per-instance tasks also expire after one period of their beat job: a backlog behind a stalled
worker is dropped, not run late in a burst (the next period enqueues them afresh).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from django.db import connection

from portal.models import Instance

log = structlog.get_logger(__name__)

# One lock namespace per job (the first int4 of the advisory key).
JOBS = {"drift": 7101, "inventory": 7102, "status": 7103, "replica": 7104, "activity": 7105, "monitoring": 7106,
        "dictionary": 7107}
# Backups and restore drills (#20): one backup and one drill at a time per instance.
JOBS.update({"backup": 7110, "drill": 7111})
SKIPPED = "skipped: still running for this instance"


@contextmanager
def instance_lock(job: str, instance_id: int) -> Iterator[bool]:
    """Yield True with the (job, instance) lock held, False when another session holds it."""
    key = JOBS[job]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [key, int(instance_id)])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [key, int(instance_id)])


def run_locked(job: str, instance_id: int, work: Callable[[], Any]) -> Any:
    """Run `work` under the (job, instance) lock; SKIPPED when that job runs for it elsewhere."""
    with instance_lock(job, instance_id) as held:
        if not held:
            log.info("fanout.skipped", job=job, instance=instance_id)
            return SKIPPED
        return work()


def dispatch(task: Any, ids: Iterable[int], *, expires: float | None = None) -> int:
    """A beat job's dispatcher: enqueue `task` once per instance id (expiring after `expires`
    seconds when given, else as the task declares); returns how many were enqueued."""
    ids = list(ids)
    for instance_id in ids:
        if expires is None:
            task.delay(instance_id)
        else:
            task.apply_async(args=[instance_id], expires=expires)
    return len(ids)


def live_instance(instance_id: int) -> Instance | None:
    """The instance a per-instance task works on, or None once it is gone or retired."""
    return Instance.objects.filter(pk=instance_id).exclude(status="retired").first()
