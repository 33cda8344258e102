"""The dispatch outbox: rows committed with the approval, sent after commit, swept when unsent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent
from portal.choices import RequestStatus
from portal.errors import Conflict
from portal.models import ChangeRequest, Team
from provisioning.models import OutboxMessage
from provisioning.outbox import APPLY_TASK, enqueue_apply, outbox_sweep
from provisioning.plans import plan_hash


def _request(instance, status=RequestStatus.APPROVED) -> ChangeRequest:
    team, _ = Team.objects.get_or_create(name="payments")
    plan = ["SELECT 1"]
    return ChangeRequest.objects.create(type="schema", instance=instance, team=team, justification="test",
                                        payload={}, plan=plan, plan_hash=plan_hash(plan), status=status)


def test_enqueue_apply_queues_in_the_transaction_and_sends_after_commit(transactional_db, managed_instance):
    # given an approved request
    request = _request(managed_instance)
    # when the approving transaction queues it
    with transaction.atomic():
        enqueue_apply(request)
        message = OutboxMessage.objects.get(request=request)
        # then nothing is sent before the commit
        assert message.sent_at is None
    # and after the commit the broker has taken the task, with ids and the plan hash only
    message.refresh_from_db()
    assert message.sent_at is not None and message.send_count == 1
    assert message.task_name == APPLY_TASK
    assert message.args == {"request_id": request.pk, "plan_hash": request.plan_hash}
    request.refresh_from_db()
    assert request.status == RequestStatus.QUEUED
    assert AuditEvent.objects.filter(action="request.queued", request_id=request.pk).count() == 1


def test_a_rolled_back_approval_leaves_no_row_and_sends_nothing(transactional_db, managed_instance):
    request = _request(managed_instance)
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_apply(request)
        raise RuntimeError("the approval failed after queueing")
    assert not OutboxMessage.objects.filter(request=request).exists()
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED


@pytest.mark.parametrize("status", [RequestStatus.SUBMITTED, RequestStatus.CANCELLED, RequestStatus.APPLIED])
def test_only_approved_or_failed_requests_can_be_queued(db, managed_instance, status):
    request = _request(managed_instance, status=status)
    with pytest.raises(Conflict):
        enqueue_apply(request)
    assert not OutboxMessage.objects.filter(request=request).exists()


def test_the_sweeper_resends_old_untaken_rows_only(transactional_db, managed_instance):
    # given three rows: old and never sent, old and taken by a worker, and brand new
    old = timezone.now() - timedelta(minutes=1)
    requests = [_request(managed_instance, status=RequestStatus.QUEUED) for _ in range(3)]
    unsent, taken, fresh = (
        OutboxMessage.objects.create(task_name=APPLY_TASK, request=r,
                                     args={"request_id": r.pk, "plan_hash": r.plan_hash})
        for r in requests
    )
    OutboxMessage.objects.filter(pk__in=[unsent.pk, taken.pk]).update(created_at=old)
    OutboxMessage.objects.filter(pk=taken.pk).update(taken_at=old)
    # when the sweeper runs
    result = outbox_sweep()
    # then only the old untaken row is sent
    assert result["sent"] >= 1
    unsent.refresh_from_db(), taken.refresh_from_db(), fresh.refresh_from_db()
    assert unsent.sent_at is not None and unsent.send_count == 1
    assert taken.sent_at is None and fresh.sent_at is None
    # and a row just sent is not sent again by the next sweep
    outbox_sweep()
    unsent.refresh_from_db()
    assert unsent.send_count == 1
