"""The audit machinery's start and orderly stop are events (PCI DSS v4 10.2.1.6), recorded by a
real worker with its embedded beat; a start after a kill names the start that never stopped."""

from __future__ import annotations

import pytest

from audit.lifecycle import machinery_started
from audit.models import AuditEvent
from tests.fixtures.celery import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _events(action: str, component: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, details__component=component).order_by("seq"))


def test_a_worker_and_its_beat_record_their_start_and_the_worker_its_stop(celery_workers):
    worker = celery_workers.start()
    started = wait_until(lambda: _events("audit.machinery_started", "worker"), message="worker start event")
    wait_until(lambda: _events("audit.machinery_started", "beat"), message="beat start event")
    assert started[0].outcome == "ok"
    assert started[0].details["pid"] > 0 and started[0].details["hostname"]
    assert started[0].object_type == "audit_machinery" and started[0].actor == "system"

    worker.stop()
    stopped = wait_until(lambda: _events("audit.machinery_stopped", "worker"), message="worker stop event")
    assert stopped[0].details["hostname"] == started[0].details["hostname"]
    assert stopped[0].seq > started[0].seq


def test_a_start_after_an_unrecorded_stop_names_the_previous_start():
    first = machinery_started("worker", hostname="w1@test")
    # the process is killed: no stop event; the next start of the same worker says so
    second = machinery_started("worker", hostname="w1@test")
    assert second.details["previous_start_without_stop"] == first.seq
    assert "previous_start_without_stop" not in machinery_started("beat", hostname="w1@test").details


def test_an_unknown_component_is_refused():
    with pytest.raises(ValueError, match="component"):
        machinery_started("web")
