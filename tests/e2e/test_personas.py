"""Every persona signs in through the browser and lands on their main page."""

from __future__ import annotations

import pytest

from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e

PERSONAS = ["admin", "alice", "dave", "bob", "carol"]  # carol (auditor) lands on the audit log


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("username", PERSONAS)
def test_persona_signs_in_and_sees_their_main_page(people, page, login, screenshot, axe_violations, username):
    # given a persona / when they sign in through the login form
    login(page, username, PASSWORD)
    # then their main page shows who they are, with navigation, and no serious accessibility finding
    assert username in page.locator("nav[aria-label='Top bar']").inner_text()
    assert page.locator("nav[aria-label='Main'] a").count() >= 1
    screenshot(page, f"{username}-home")
    assert axe_violations(page) == []
    assert page.console_errors == []  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_wrong_password_is_explained_on_the_page(people, page, live_server, axe_violations):
    page.goto(live_server.url + "/login/")
    assert axe_violations(page) == []
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert "correct username and password" in page.locator("[role=alert]").inner_text()
