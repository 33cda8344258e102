"""Two reviewers approving at the same instant: exactly one transition (row lock), really racing."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.db import connection

from audit.models import AuditEvent
from portal.errors import Conflict
from portal.models import ChangeRequest, Team
from portal.services.requests import request_approve, request_submit
from provisioning.models import OutboxMessage
from tests.portal.requests_helpers import unique


def race(functions) -> list:
    """Run each function in its own thread (its own database connection), released together."""
    barrier = threading.Barrier(len(functions))
    results: list = [None] * len(functions)

    def run(index, function):
        try:
            barrier.wait()
            results[index] = function()
        except Exception as exc:  # noqa: BLE001 - the test inspects what each side got
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_concurrent_approvals_make_exactly_one_transition(people, managed_instance, round_):
    request = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                             team=Team.objects.get(name="payments"), justification="race",
                             payload={"database": "app", "name": unique("race")})
    bob, admin = User.objects.get(username="bob"), User.objects.get(username="admin")
    results = race([
        lambda: request_approve(request=request, reviewer=bob, comment="bob"),
        lambda: request_approve(request=request, reviewer=admin, comment="admin"),
    ])
    successes = [r for r in results if isinstance(r, ChangeRequest)]
    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert len(successes) == 1 and len(conflicts) == 1, results
    assert ChangeRequest.objects.get(pk=request.pk).status == "queued"
    assert OutboxMessage.objects.filter(request_id=request.pk).count() == 1
    assert AuditEvent.objects.filter(request_id=request.pk, action="request.approved").count() == 1
    assert AuditEvent.objects.filter(request_id=request.pk, action="request.queued").count() == 1
    assert request.approvals.count() == 1
