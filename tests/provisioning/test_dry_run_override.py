"""Dry runs in the preview and the override of a failed one (#19 item 2), on the real cluster: the
preview runs the DDL dry run as the requester types; a submit whose dry run fails is refused unless
the requester gives a reason, which is kept on the request and in request.submitted; reviewers see
the failure in the queue row, the status card and the approve dialog."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.models import ChangeRequest, Team
from tests.provisioning.test_ddl_e2e import ddl_body, payments_schema  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

FAILING = "CREATE TABLE f (id int PRIMARY KEY); ALTER TABLE f ALTER COLUMN nope TYPE bigint"
PASSING = "CREATE TABLE p (id int PRIMARY KEY)"
REASON = "the column comes with the migration of ticket 42"


def test_a_failed_dry_run_refuses_the_submit_without_a_reason(payments_schema, api_for):  # noqa: F811
    before = ChangeRequest.objects.count()
    for override in ({}, {"dry_run_override": "   "}):
        response = api_for("alice").post("/api/v1/requests/", {**ddl_body(payments_schema["schema"], FAILING),
                                                               **override}, format="json")
        assert response.status_code == 400, response.json()
        message = response.json()["errors"]["dry_run_override"][0]
        assert "dry run failed at statement 2" in message and "42703" in message
    assert ChangeRequest.objects.count() == before
    too_long = api_for("alice").post("/api/v1/requests/", {**ddl_body(payments_schema["schema"], FAILING),
                                                           "dry_run_override": "x" * 1001}, format="json")
    assert too_long.status_code == 400 and "dry_run_override" in too_long.json()["errors"]


def test_the_override_is_recorded_and_marked_for_reviewers(payments_schema, api_for, web_for):  # noqa: F811
    # when alice submits a failing plan with a reason
    response = api_for("alice").post("/api/v1/requests/", {**ddl_body(payments_schema["schema"], FAILING),
                                                           "dry_run_override": REASON}, format="json")
    assert response.status_code == 201, response.json()
    change = ChangeRequest.objects.get(pk=response.json()["id"])
    # then the reason is kept on the request and in its request.submitted event
    assert change.dry_run["ok"] is False and change.dry_run["override"] == {"reason": REASON, "by": "alice"}
    event = AuditEvent.objects.get(action="request.submitted", request_id=change.pk)
    assert event.details["dry_run_failed"] is True and event.details["dry_run_override"] == REASON
    # and reviewers see the failure in the queue row, the status card and the approve dialog
    bob = web_for("bob")
    queue = bob.get(reverse("review-queue")).content.decode()
    row = queue.split(f'id="review-{change.pk}"')[1].split("</tr>")[0]
    assert "dry run failed" in row
    page = bob.get(reverse("request-detail", args=[change.pk])).content.decode()
    assert 'id="status-dry-run-failed"' in page and REASON in page.split('id="status-dry-run-failed"')[1][:500]
    dialog = page.split('id="modal-approve"')[1].split("</form>")[0]
    assert "dry-run-failed-confirm" in dialog and "at statement 2" in dialog and REASON in dialog


def test_a_passing_dry_run_needs_no_reason_and_records_none(payments_schema, api_for):  # noqa: F811
    response = api_for("alice").post("/api/v1/requests/", {**ddl_body(payments_schema["schema"], PASSING),
                                                           "dry_run_override": "not needed"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["dry_run"]["ok"] is True and "override" not in response.json()["dry_run"]
    event = AuditEvent.objects.get(action="request.submitted", request_id=response.json()["id"])
    assert "dry_run_override" not in event.details


def _form(instance, schema: str, text: str, **extra) -> dict:
    return {"instance": instance.pk, "team": Team.objects.get(name="payments").pk, "justification": "invoices",
            "database": "app", "schema": schema, "sql": text, **extra}


def test_the_preview_dry_runs_as_you_type_and_the_form_needs_a_reason(
        payments_schema, web_for, managed_instance, api_for):  # noqa: F811
    alice = web_for("alice")
    schema = payments_schema["schema"]
    preview = reverse("request-preview", args=["ddl"])
    failed = alice.post(preview, _form(managed_instance, schema, FAILING), HTTP_HX_REQUEST="true").content.decode()
    assert 'id="preview-dry-run" data-ok="false"' in failed and "at statement 2" in failed
    assert 'id="preview-dry-run-blocks"' in failed and "as you type" in failed
    passed = alice.post(preview, _form(managed_instance, schema, PASSING), HTTP_HX_REQUEST="true").content.decode()
    assert 'id="preview-dry-run" data-ok="true"' in passed and 'id="preview-dry-run-blocks"' not in passed
    # the API's preview carries it too
    body = api_for("alice").post("/api/v1/requests/preview/", {k: v for k, v in ddl_body(schema, FAILING).items()
                                                               if k != "justification"}, format="json").json()
    assert body["dry_run"]["ok"] is False and body["dry_run"]["statement_index"] == 2
    # the form refuses the failing plan inline, then takes it with a reason
    before = ChangeRequest.objects.count()
    form_url = reverse("request-new-form", args=["ddl"])
    refused = alice.post(form_url, _form(managed_instance, schema, FAILING))
    assert refused.status_code == 400 and 'id="id_dry_run_override_error"' in refused.content.decode()
    assert ChangeRequest.objects.count() == before
    accepted = alice.post(form_url, _form(managed_instance, schema, FAILING, dry_run_override=REASON))
    assert accepted.status_code == 302
    assert ChangeRequest.objects.latest("pk").dry_run["override"]["reason"] == REASON


def test_no_dry_run_on_prod_so_no_reason_is_asked(payments_schema, api_for, managed_instance):  # noqa: F811
    managed_instance.environment = "prod"
    managed_instance.save(update_fields=["environment"])
    try:
        response = api_for("alice").post("/api/v1/requests/", ddl_body(payments_schema["schema"], FAILING),
                                         format="json")
        assert response.status_code == 201, response.json()
        assert response.json()["dry_run"] is None
    finally:
        managed_instance.environment = "dev"
        managed_instance.save(update_fields=["environment"])
