"""Every persona signs in through the browser, lands on their main page, and every page of their
navigation (plus the detail pages behind it) passes axe-core with no serious or critical finding,
with a screenshot each under artifacts/screenshots/. Focus moves in document order."""

from __future__ import annotations

import pytest

from portal.models import ApprovalPolicy, Team
from portal.services.requests import request_submit
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e

PERSONAS = ["admin", "alice", "dave", "bob", "carol"]  # carol (auditor) lands on the audit log
# dave's navigation is alice's (both developers): his pages are walked as hers.
WALKED = {"admin", "alice", "bob", "carol"}


def detail_pages(username: str, change, instance) -> list[tuple[str, str]]:
    """(path, name) of the pages behind each persona's lists: a request, an instance, a team, ..."""
    from audit.models import AuditEvent

    pages = {
        "alice": [(f"/requests/{change.pk}/", "request"), (f"/instances/{instance.pk}/", "instance"),
                  ("/requests/search/?q=persona", "search")],
        "bob": [(f"/requests/{change.pk}/", "request"), ("/entitlements/", "entitlements")],
        "carol": [(f"/audit/events/{AuditEvent.objects.order_by('-seq').first().seq}/", "audit-event")],
        "admin": [(f"/teams/{Team.objects.get(name='payments').pk}/", "team"),
                  (f"/policies/{ApprovalPolicy.objects.order_by('pk').first().pk}/", "policy"),
                  (f"/instances/{instance.pk}/", "instance"), ("/instances/register/", "register")],
    }
    return pages.get(username, [])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("username", PERSONAS)
def test_persona_signs_in_and_every_main_page_passes_axe(people, managed_instance, page, login, screenshot,
                                                          axe_violations, live_server, username):
    # a request of alice's, so lists, queues and the request page have a row to show
    change = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                            team=Team.objects.get(name="payments"), justification="persona walk",
                            payload={"database": "app", "name": "persona_walk"})
    # given a persona / when they sign in through the login form
    login(page, username, PASSWORD)
    # then their main page shows who they are, with navigation, and no serious accessibility finding
    assert username in page.locator("nav[aria-label='Top bar']").inner_text()
    links = page.locator("nav[aria-label='Main'] a")
    assert links.count() >= 1
    screenshot(page, f"{username}-home")
    assert axe_violations(page) == []
    if username in WALKED:
        # and so does every page of their navigation, and the detail pages behind it
        pages = [(href, href.strip("/").replace("/", "-") or "home")
                 for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))")]
        pages += detail_pages(username, change, managed_instance)
        findings = {}
        for path, name in pages:
            response = page.goto(live_server.url + path)
            assert response is not None and response.status == 200, (path, response and response.status)
            screenshot(page, f"{username}-{name}")
            if violations := axe_violations(page):
                findings[path] = [(v["id"], v["impact"], len(v["nodes"])) for v in violations]
        assert not findings, f"serious/critical axe-core findings for {username}: {findings}"
    assert page.console_errors == []  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_wrong_password_is_explained_on_the_page(people, page, live_server, axe_violations):
    page.goto(live_server.url + "/login/")
    assert axe_violations(page) == []
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert "correct username and password" in page.locator("[role=alert]").inner_text()


def focus_walk(page, until: str, stops: int = 60) -> list[dict]:
    """Press Tab from the top of the page until the element with id `until` has focus (at most
    `stops` times): where focus landed each time."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.evaluate("() => { window.__tabStops = []; }")
    walk = []
    for _ in range(stops):
        page.keyboard.press("Tab")
        walk.append(page.evaluate("""() => {
            const el = document.activeElement;
            window.__tabStops.push(el);
            const stops = window.__tabStops;
            const previous = stops.length > 1 ? stops[stops.length - 2] : null;
            return {id: el.id, tag: el.tagName.toLowerCase(), label: (el.labels && el.labels[0]
                      ? el.labels[0].innerText : el.getAttribute('aria-label') || el.innerText || '').trim(),
                    after: previous === null || previous === el
                      || !!(previous.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING)};
        }"""))
        if walk[-1]["id"] == until:
            return walk
    raise AssertionError(f"#{until} never got focus in {stops} Tabs: {[stop['id'] for stop in walk]}")


@pytest.mark.django_db(transaction=True)
def test_focus_follows_the_document_on_sign_in_and_on_the_request_form(people, managed_instance, page, login,
                                                                     live_server):
    # the sign-in form: the username has focus, then Tab: password, then the button
    page.goto(live_server.url + "/login/")
    assert page.evaluate("document.activeElement.id") == "id_username"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_password"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.innerText").strip() == "Sign in"

    # a working page: top bar, then the main navigation, then the form's fields in their visual
    # order, each stop later in the document than the one before (no tabindex jumps, no trap)
    login(page, "alice", PASSWORD)
    page.goto(live_server.url + "/requests/new/schema/")
    page.locator("#request-form").wait_for()
    fields = page.locator("#request-form :is(input, select, textarea, button):not([type=hidden]):not([disabled])")
    field_ids = fields.evaluate_all("els => els.map(e => e.id)")
    walk = focus_walk(page, until=field_ids[-1])
    reached = [stop["id"] for stop in walk]
    out_of_order = [stop for stop in walk if not stop["after"]]
    assert not out_of_order, f"focus jumped backwards: {out_of_order}"
    in_form = [stop_id for stop_id in reached if stop_id in field_ids]
    assert in_form == field_ids, f"form fields by Tab {in_form}, in the document {field_ids}"
    first_field = reached.index(field_ids[0])
    nav_ids = page.locator("nav[aria-label='Main'] a").evaluate_all("links => links.map(a => a.id)")
    assert set(nav_ids) <= set(reached[:first_field]), "the navigation comes before the form"
    assert all(stop["label"] for stop in walk), f"a focus stop without a name: {[s for s in walk if not s['label']]}"
