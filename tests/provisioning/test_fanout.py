"""Per-instance beat jobs fan out (#23): one task per instance over the workers, so a hung cluster
holds only its own task; a job still running for an instance is not started twice."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import psycopg
import pytest
from django.db import connection

from portal.choices import Environment, InstanceKind, InstanceStatus
from portal.models import Grant, Instance, Team
from provisioning import fanout
from provisioning.models import DriftFinding
from provisioning.tasks import drift_scan, drift_scan_instance
from tests.fixtures.celery import wait_until

pytestmark = pytest.mark.slow


class HungServer:
    """A TCP listener on loopback that accepts connections and never says a word (a hung cluster)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.open: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            self.accepted += 1

    def waiting(self) -> int:
        """Connections accepted whose client has not given up yet."""
        alive = 0
        for conn in self.open:
            conn.setblocking(False)
            try:
                while conn.recv(65536):  # what the client sent (its startup packet), never answered
                    pass
            except BlockingIOError:
                alive += 1  # nothing more to read and no end of file: the client still waits
            except OSError:
                pass  # reset by the client: it gave up
        return alive

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


def _hung_instance(name: str, port: int) -> Instance:
    instance = Instance(name=name, environment=Environment.DEV, kind=InstanceKind.EXTERNAL, host="127.0.0.1",
                        port=port, database="postgres", admin_user="postgres", status=InstanceStatus.REACHABLE)
    instance.admin_password = "unused"
    instance.save()
    return instance


@pytest.mark.django_db(transaction=True)
def test_a_hung_cluster_does_not_delay_the_other_instances_drift_scan(people, managed_instance, celery_workers):
    # given three hung clusters that sort (and are dispatched) before the good one, and a portal grant
    # on the good one for a role that does not exist there: its scan finds that drift
    hung = HungServer()
    worker = None
    try:
        for n in range(3):
            _hung_instance(f"aa-hung-{n}", hung.port)
        ghost = f"ghost_{uuid.uuid4().hex[:8]}"
        Grant.objects.create(instance=managed_instance, database="app", schema="public", role=ghost,
                             privileges=["SELECT"], tables="all", team=Team.objects.get(name="payments"))
        worker = celery_workers.start(pool="threads", concurrency=4, beat=False)

        # when beat's drift job runs: it only enqueues, one task per instance
        assert drift_scan() == 4

        # then the good instance's finding is in while the hung clusters' scans are still waiting
        wait_until(lambda: DriftFinding.objects.filter(instance=managed_instance, role=ghost).exists(),
                   timeout=60, message="the good instance's drift finding")
        assert hung.waiting() >= 1, "the hung clusters' scans ended first: the good one was not scanned beside them"
        assert hung.accepted >= 3
    finally:
        if worker is not None:
            worker.stop()  # its hung scans end on their connect timeouts before the test's flush
        hung.close()


@pytest.mark.django_db(transaction=True)
def test_a_scan_still_running_for_an_instance_is_not_started_twice(people, managed_instance):
    ghost = f"ghost_{uuid.uuid4().hex[:8]}"
    Grant.objects.create(instance=managed_instance, database="app", schema="public", role=ghost,
                         privileges=["SELECT"], tables="all", team=Team.objects.get(name="payments"))
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    # another worker's session holds the scan of this instance
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (fanout.JOBS["drift"], managed_instance.pk))
        assert drift_scan_instance(managed_instance.pk) == fanout.SKIPPED
        assert not DriftFinding.objects.filter(role=ghost).exists()
        other.execute("SELECT pg_advisory_unlock(%s, %s)", (fanout.JOBS["drift"], managed_instance.pk))
    # released (as when that worker ends or dies): the next run scans
    result = drift_scan_instance(managed_instance.pk)
    assert result != fanout.SKIPPED and DriftFinding.objects.filter(role=ghost).exists()


@pytest.mark.django_db(transaction=True)
def test_the_lock_is_released_when_the_task_fails(managed_instance):
    with pytest.raises(RuntimeError), fanout.instance_lock("drift", managed_instance.pk) as held:
        assert held
        raise RuntimeError("the scan failed")
    with fanout.instance_lock("drift", managed_instance.pk) as held_again:
        assert held_again
    started = time.monotonic()
    assert fanout.run_locked("drift", managed_instance.pk, lambda: "ran") == "ran"
    assert time.monotonic() - started < 5
