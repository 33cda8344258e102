"""The reviewer's context in Chromium (#19 item 3): a grant's page loads the access diff from the
real cluster after the page, an expanded queue row loads it too, and after a decision the reviewer
lands on the next item. Each page passes axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from psycopg import sql

from provisioning.connections import connect
from tests.fixtures.people import PASSWORD
from tests.portal.requests_helpers import unique
from tests.portal.ui_helpers import given_request

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_the_access_diff_loads_on_the_page_and_in_the_queue_and_a_decision_moves_on(
        people, managed_instance, page, login, live_server, axe_violations):
    schema, role = unique("e2ectx"), unique("e2erole")
    with connect(managed_instance, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
    payload = {"role": role, "database": "app", "schema": schema, "privileges": ["USAGE", "SELECT"],
               "tables": "all", "default_privileges": False}
    first = given_request(requester=people["alice"], instance=managed_instance, payload=payload)
    second = given_request(requester=people["alice"], instance=managed_instance, payload=payload)
    login(page, "bob", PASSWORD)
    # the request's page: the diff arrives after the page, USAGE flagged as already held
    page.goto(f"{live_server.url}/requests/{first.pk}/")
    panel = page.locator(f"#context-{first.pk}")
    expect(panel.locator('tr[data-privilege="USAGE"]')).to_contain_text("already held", timeout=15000)
    expect(panel.locator('tr[data-privilege="SELECT"]')).to_contain_text("added")
    expect(panel.locator(".approval-progress")).to_contain_text("Approvals: 0 of")
    assert axe_violations(page) == []
    # the queue: expanding a row loads its context
    page.goto(f"{live_server.url}/reviews/")
    page.locator(f"#expand-{second.pk}").click()
    expect(page.locator(f"#context-{second.pk} .redundant-note")).to_contain_text("USAGE", timeout=15000)
    assert axe_violations(page) == []
    # a decision on the first request's page lands on the second's
    page.goto(f"{live_server.url}/requests/{first.pk}/")
    page.locator("#open-reject").click()
    page.locator("#comment-reject").fill("already has it")
    page.locator("#confirm-reject").click()
    page.wait_for_url(f"{live_server.url}/requests/{second.pk}/")
