"""Edit and resubmit (#19 item 9): a failed or rejected request offers a new request of the same type,
pre-filled from it and linked to it (resubmit_of); only its requester or team may, only from a failed
or rejected request; out of scope is a 404; the link is audited with the submission."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.errors import InvalidPayload
from portal.models import ChangeRequest
from portal.services.requests import request_submit
from tests.portal.ui_helpers import dev_instance, given_request


@pytest.fixture
def payments(people):
    return people["alice"].teams.get(name="payments")


def schema_request(people, instance, payments, status: str, name: str = "ledger_old") -> ChangeRequest:
    return given_request(requester=people["alice"], instance=instance, team=payments, type="schema", status=status,
                         payload={"database": "app", "name": name}, plan=[f'CREATE SCHEMA "{name}"'])


@pytest.mark.parametrize("status", ["rejected", "failed"])
def test_a_failed_or_rejected_request_offers_edit_and_resubmit(web_for, people, payments, status):
    change = schema_request(people, dev_instance(), payments, status)
    body = web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert f'id="edit-resubmit" href="/requests/new/schema/?from={change.pk}"' in body


@pytest.mark.parametrize("status", ["submitted", "applied", "cancelled"])
def test_other_statuses_do_not(web_for, people, payments, status):
    change = schema_request(people, dev_instance(), payments, status)
    body = web_for("alice").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="edit-resubmit"' not in body
    # and asking for the pre-filled form anyway sends back to the request with the reason
    response = web_for("alice").get(reverse("request-new-form", args=["schema"]), {"from": change.pk})
    assert response.status_code == 302 and response["Location"] == reverse("request-detail", args=[change.pk])


def test_the_form_is_prefilled_from_the_old_request(web_for, people, payments):
    change = schema_request(people, dev_instance(), payments, "rejected", name="ledger_v1")
    response = web_for("alice").get(reverse("request-new-form", args=["schema"]), {"from": change.pk})
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="resubmit-banner"' in body
    assert 'name="name" value="ledger_v1"' in body
    assert f'name="resubmit_of" value="{change.pk}"' in body and 'type="hidden"' in body
    assert "for the monthly report" in body  # the justification


def test_a_reviewer_outside_the_team_is_not_offered_it(web_for, people, payments):
    change = schema_request(people, dev_instance(), payments, "rejected")
    body = web_for("bob").get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="edit-resubmit"' not in body


def test_another_teams_developer_gets_404(web_for, people, payments):
    change = schema_request(people, dev_instance(), payments, "rejected")
    response = web_for("dave").get(reverse("request-new-form", args=["schema"]), {"from": change.pk})
    assert response.status_code == 404


def test_the_service_refuses_a_wrong_original(people, payments):
    instance = dev_instance()
    submitted = schema_request(people, instance, payments, "submitted")
    with pytest.raises(InvalidPayload) as caught:
        request_submit(user=people["alice"], actor_ip=None, type="schema", instance=instance, team=payments,
                       justification="again", payload={"database": "app", "name": "x_again"}, resubmit_of=submitted)
    assert "resubmit_of" in caught.value.errors
    rejected = schema_request(people, instance, payments, "rejected")
    with pytest.raises(InvalidPayload) as caught:  # another type than the original's
        request_submit(user=people["alice"], actor_ip=None, type="role", instance=instance, team=payments,
                       justification="again", payload={"name": "x_again"}, resubmit_of=rejected)
    assert "resubmit_of" in caught.value.errors
    with pytest.raises(InvalidPayload):  # someone outside the team
        request_submit(user=people["dave"], actor_ip=None, type="schema", instance=instance, team=payments,
                       justification="again", payload={"database": "app", "name": "x_again"}, resubmit_of=rejected)
    assert not ChangeRequest.objects.filter(resubmit_of=rejected).exists()


def test_resubmitting_files_a_new_linked_request(web_for, people, managed_instance, payments):
    # given a rejected schema request
    old = schema_request(people, managed_instance, payments, "rejected", name="bad_ledger")
    client = web_for("alice")
    # when alice submits the pre-filled form with a new name
    response = client.post(reverse("request-new-form", args=["schema"]), {
        "instance": managed_instance.pk, "team": payments.pk, "justification": "renamed as asked",
        "database": "app", "name": "good_ledger", "owner_role": "", "resubmit_of": old.pk})
    # then a new request is filed, linked to the old one, which stays rejected
    new = ChangeRequest.objects.get(payload__name="good_ledger")
    assert response.status_code == 302 and response["Location"] == reverse("request-detail", args=[new.pk])
    assert new.resubmit_of_id == old.pk and new.status != "rejected"
    old.refresh_from_db()
    assert old.status == "rejected"
    # and the link shows both ways and is in the audit trail of the submission
    assert 'id="resubmit-of"' in client.get(reverse("request-detail", args=[new.pk])).content.decode()
    assert f'<a href="/requests/{new.pk}/">#{new.pk}</a>' in client.get(
        reverse("request-detail", args=[old.pk])).content.decode()
    event = AuditEvent.objects.get(action="request.submitted", request_id=new.pk)
    assert event.details["resubmit_of"] == old.pk
