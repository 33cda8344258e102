"""Browser journey of break-glass: alice files an emergency grant for an incident, sees it applied
at once with the badge, and bob acknowledges it in the review queue's post-hoc section."""

from __future__ import annotations

import uuid

import pytest
from psycopg import sql

from portal.models import BreakGlass, ChangeRequest
from tests.fixtures.people import PASSWORD
from tests.provisioning.helpers import admin_conn, approved_request, role_payload, schema_payload

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_alice_breaks_the_glass_sees_it_applied_with_the_badge_and_bob_acknowledges_it(
    people, managed_cluster, managed_instance, celery_worker, wait_for_status, browser, page, login, screenshot,
    axe_violations, live_server,
):
    # given a payments schema with a table and a payments role holding nothing on it
    suffix = uuid.uuid4().hex[:8]
    schema, role = f"bgj_{suffix}", f"bgj_oncall_{suffix}"
    for request in (approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
                    approved_request(managed_instance, "role", role_payload(role), requester=people["alice"])):
        assert wait_for_status(request.pk, {"applied", "failed"}).status == "applied"
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.ledger (id int)").format(sql.Identifier(schema)))

    # when alice files a break-glass grant from its page
    login(page, "alice", PASSWORD)
    page.goto(live_server.url + "/break-glass/new/")
    assert "without approval" in page.locator("#break-glass-explainer").inner_text()
    page.locator("[name=instance]").select_option(label="demo")
    page.locator("[name=team]").select_option(label="payments")
    page.locator("[name=role]").fill(role)
    page.locator("[name=database]").fill("app")
    page.locator("[name=schema]").fill(schema)
    page.locator("[name=incident_ref]").fill("INC-9001")
    page.locator("[name=duration_minutes]").fill("45")
    page.locator("[name=justification]").fill("payments ledger stuck, reading it to find the bad row")
    assert axe_violations(page) == []
    screenshot(page, "alice-break-glass-form")
    page.locator("#break-glass-submit").click()
    page.wait_for_url(lambda url: "/break-glass/new" not in url)
    change = ChangeRequest.objects.get(break_glass=True, payload__role=role)
    assert f"/requests/{change.pk}/" in page.url
    # then it applies at once, with nobody's approval, and the page shows the badge and the incident
    assert wait_for_status(change.pk, {"applied", "failed"}).status == "applied"
    page.reload()
    page.locator("#header-status").filter(has_text="applied").wait_for()
    assert "break-glass" in page.locator("#request-header").inner_text()
    assert "INC-9001" in page.locator("#break-glass-panel").inner_text()
    assert "review due" in page.locator("#break-glass-panel").inner_text().lower()
    assert axe_violations(page) == []
    screenshot(page, "alice-break-glass-applied")
    # and the list carries the badge too
    page.goto(live_server.url + "/requests/")
    assert "break-glass" in page.locator(f"#request-row-{change.pk}").inner_text()

    # when bob opens the review queue, the post-hoc review is there
    bob = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    login(bob, "bob", PASSWORD)
    bob.goto(live_server.url + "/reviews/")
    row = bob.locator(f"#post-hoc-{change.pk}")
    assert "INC-9001" in row.inner_text()
    assert axe_violations(bob) == []
    screenshot(bob, "bob-post-hoc-review")
    # and he acknowledges it with a comment
    bob.locator(f"#post-hoc-comment-{change.pk}").fill("checked against INC-9001: needed")
    bob.locator(f"#acknowledge-{change.pk}").click()
    bob.wait_for_load_state()
    # then it leaves the queue and the request shows who reviewed it
    assert bob.locator(f"#post-hoc-{change.pk}").count() == 0
    record = BreakGlass.objects.get(request=change)
    assert record.review_outcome == "acknowledged" and record.reviewed_by == people["bob"]
    bob.goto(live_server.url + f"/requests/{change.pk}/")
    assert "acknowledged by bob" in bob.locator("#break-glass-reviewed").inner_text()
    bob.context.close()
