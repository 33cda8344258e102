"""The override of a failed dry run in Chromium (#19 item 2): the preview shows the failed dry run
as alice types, the submit is refused until she gives a reason, and bob sees the failure in the
queue row and the approve dialog. Each page passes axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.models import Team
from tests.fixtures.people import PASSWORD
from tests.provisioning.test_ddl_e2e import payments_schema  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

FAILING = "CREATE TABLE g (id int PRIMARY KEY);\nALTER TABLE g ALTER COLUMN nope TYPE bigint"
REASON = "the column arrives with ticket 42's migration"


def test_a_failed_dry_run_is_overridden_with_a_reason_and_marked_for_the_reviewer(
        payments_schema, managed_instance, browser, page, login, live_server, axe_violations):  # noqa: F811
    team = Team.objects.get(name="payments")
    login(page, "alice", PASSWORD)
    page.goto(f"{live_server.url}/requests/new/ddl/?instance={managed_instance.pk}&team={team.pk}"
              f"&database=app&schema={payments_schema['schema']}")
    page.locator("#request-form").wait_for()
    page.locator("#id_justification").fill("invoices need a bigger id")
    # when alice types SQL whose dry run fails, the preview shows it failing as she types
    page.locator("#id_sql").fill(FAILING)
    dry_run = page.locator("#preview-dry-run")
    expect(dry_run).to_have_attribute("data-ok", "false", timeout=15000)
    expect(dry_run).to_contain_text("at statement 2")
    expect(page.locator("#preview-dry-run-blocks")).to_be_visible()
    assert axe_violations(page) == []
    # the submit without a reason is refused, naming the override field
    page.locator("#submit-request").click()
    page.locator("#form-errors").wait_for()
    expect(page.locator("#id_dry_run_override_error")).to_contain_text("dry run failed at statement 2")
    # with a reason, it goes to the reviewers, marked
    page.locator("#id_dry_run_override").fill(REASON)
    page.locator("#submit-request").click()
    page.wait_for_url(lambda url: "/requests/new/" not in url)
    expect(page.locator("#status-dry-run-failed")).to_contain_text(REASON)
    request_path = page.url.removeprefix(live_server.url)

    reviewer = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    login(reviewer, "bob", PASSWORD)
    reviewer.goto(live_server.url + "/reviews/")
    request_id = request_path.strip("/").split("/")[-1]
    row = reviewer.locator(f"#review-{request_id}")
    expect(row.locator(".dry-run-failed")).to_be_visible()
    row.locator(f"#approve-{request_id}").click()
    dialog = reviewer.locator(f"#modal-approve-{request_id}")
    expect(dialog.locator(".dry-run-failed-confirm")).to_contain_text(REASON)
    assert axe_violations(reviewer) == []
    reviewer.context.close()
