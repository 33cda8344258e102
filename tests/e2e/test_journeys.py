"""Browser journeys: the reviewer works the queue; the admin registers instances.

Real Chromium against the live server; a screenshot of each main page under
artifacts/screenshots/; no serious axe-core finding on any of them.
"""

from __future__ import annotations

import socket

import pytest

from portal.models import Approval, ChangeRequest, Instance, Team
from portal.services.requests import request_submit
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e


def submit(people, instance, who: str, team: str, name: str) -> ChangeRequest:
    return request_submit(user=people[who], actor_ip=None, type="schema", instance=instance,
                          team=Team.objects.get(name=team), justification=f"{name} for the browser journey",
                          payload={"database": "app", "name": name})


@pytest.mark.django_db(transaction=True)
def test_bob_approves_one_request_rejects_another_with_a_comment_and_admin_cannot_approve_his_own(
    people, managed_instance, page, login, screenshot, axe_violations, live_server
):
    approve_me = submit(people, managed_instance, "alice", "payments", "journey_approve")
    reject_me = submit(people, managed_instance, "alice", "payments", "journey_reject")
    own = submit(people, managed_instance, "admin", "payments", "journey_own")

    # bob's queue lists both of alice's requests; the plan unfolds in place
    login(page, "bob", PASSWORD)
    page.goto(live_server.url + "/reviews/")
    for change in (approve_me, reject_me):
        assert page.locator(f"#review-{change.pk}").is_visible()
    page.locator(f"#expand-{approve_me.pk}").click()
    page.locator(f"#plan-row-{approve_me.pk}").wait_for(state="visible")
    assert "CREATE SCHEMA" in page.locator(f"#plan-row-{approve_me.pk}").inner_text()
    assert axe_violations(page) == []
    screenshot(page, "bob-review-queue")

    # approve: the dialog restates what will run where, and the decision lands
    page.locator(f"#approve-{approve_me.pk}").click()
    dialog = page.locator(f"#modal-approve-{approve_me.pk}")
    dialog.wait_for(state="visible")
    assert "demo" in dialog.inner_text() and "payments" in dialog.inner_text()
    # focus moves into the dialog, and Tab never reaches the page behind it (past the dialog's last
    # control it may leave the document for the browser's own controls, then comes back into it)
    inside = f"() => !!document.activeElement.closest('#modal-approve-{approve_me.pk}')"
    page.wait_for_function(inside)
    for _ in range(8):
        page.keyboard.press("Tab")
        where = page.evaluate(f"""() => document.activeElement.closest('#modal-approve-{approve_me.pk}') ? 'dialog'
                                  : document.activeElement === document.body ? 'outside the document'
                                  : document.activeElement.outerHTML.slice(0, 120)""")
        assert where in ("dialog", "outside the document"), f"focus reached the page behind the dialog: {where}"
    dialog.get_by_label("Comment (optional)").fill("plan matches the ticket")
    dialog.locator(f"#confirm-approve-{approve_me.pk}").click()
    page.wait_for_load_state()
    approve_me.refresh_from_db()
    assert approve_me.status in ("approved", "queued")

    # reject, with the reason the requester will read
    page.goto(live_server.url + "/reviews/")
    page.locator(f"#reject-{reject_me.pk}").click()
    dialog = page.locator(f"#modal-reject-{reject_me.pk}")
    dialog.wait_for(state="visible")
    dialog.get_by_label("Comment (required)").fill("use the existing payments_app schema instead")
    dialog.locator(f"#confirm-reject-{reject_me.pk}").click()
    page.wait_for_load_state()
    reject_me.refresh_from_db()
    assert reject_me.status == "rejected"
    assert Approval.objects.get(request=reject_me).comment == "use the existing payments_app schema instead"
    screenshot(page, "bob-after-decisions")
    assert page.console_errors == []  # type: ignore[attr-defined]

    # admin may review, but not his own request: no approve action, and the page says why
    page.context.clear_cookies()
    login(page, "admin", PASSWORD)
    page.goto(live_server.url + f"/requests/{own.pk}/")
    assert page.locator(f"#modal-approve-{own.pk}, #approve-{own.pk}").count() == 0
    assert "own" in page.locator("main").inner_text().lower()
    assert axe_violations(page) == []
    screenshot(page, "admin-own-request")
    own.refresh_from_db()
    assert own.status == "submitted"


@pytest.mark.django_db(transaction=True)
def test_admin_registers_an_instance_and_a_failed_connection_is_explained(
    people, managed_cluster, page, login, screenshot, axe_violations, live_server
):
    login(page, "admin", PASSWORD)
    page.goto(live_server.url + "/instances/register/")
    assert axe_violations(page) == []
    screenshot(page, "admin-register-instance")

    # a port where nothing listens: the page says what failed and what to check, stores nothing
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    def fill(name: str, port: int, password: str) -> None:
        page.get_by_label("Name").fill(name)
        page.get_by_label("Environment").select_option("dev")
        page.get_by_label("Host").fill("127.0.0.1")
        page.get_by_label("Port").fill(str(port))
        page.get_by_label("Database").fill("postgres")
        page.get_by_label("Admin user").fill("postgres")
        page.get_by_label("Admin password").fill(password)
        page.locator("#register-instance").click()
        page.wait_for_load_state()

    fill("nowhere", closed_port, "irrelevant")
    failure = page.locator("#registration-failed")
    failure.wait_for()
    assert "refused" in failure.inner_text().lower()
    assert "Nothing listens on that host and port" in page.locator("#registration-hint").inner_text()
    assert not Instance.objects.filter(name="nowhere").exists()
    assert axe_violations(page) == []
    screenshot(page, "admin-register-failed")
    # The refused form comes back with status 400, which Chromium logs as a failed load: expected.
    assert page.console_errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]  # type: ignore[attr-defined]
    page.console_errors.clear()  # type: ignore[attr-defined]

    # the real cluster with its real password: registered, listed
    fill("journey-pg", managed_cluster.port, managed_cluster.admin_password)
    page.wait_for_url(lambda url: "/register/" not in url)
    assert Instance.objects.filter(name="journey-pg", status="reachable").exists()
    assert "journey-pg" in page.locator("main").inner_text()
    assert managed_cluster.admin_password not in page.content()
    screenshot(page, "admin-instance-registered")
    assert page.console_errors == []  # type: ignore[attr-defined]
