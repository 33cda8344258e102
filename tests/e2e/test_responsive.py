"""Every main page of every persona at a phone's 390x844 and a desktop's 1440x900 (#19): the page
never scrolls sideways (document.scrollingElement.scrollWidth <= window.innerWidth), has no serious
or critical axe-core finding, and leaves a screenshot under artifacts/screenshots/responsive/. On a
phone the navigation is an offcanvas menu opened from the top bar."""

from __future__ import annotations

import pytest

from portal.models import ApprovalPolicy, Team
from portal.services.requests import request_reject, request_submit
from tests.e2e.conftest import track_requests, wait_settled
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1440, "height": 900}}
PERSONAS = ["alice", "bob", "carol", "admin"]

OVERFLOW = """() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth,
  wide: Array.from(document.querySelectorAll('main *')).filter(e => e.getBoundingClientRect().right
        > window.innerWidth + 1 && !e.closest('.table-responsive, .offcanvas, pre, ol.sql'))
        .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + e.className)})"""


def extra_pages(username: str, change, rejected, instance) -> list[str]:
    """The detail pages behind each persona's lists (a request, an instance, a team, an event)."""
    from audit.models import AuditEvent

    event = AuditEvent.objects.order_by("-seq").first()
    pages = {
        "alice": [f"/requests/{change.pk}/", f"/requests/{rejected.pk}/", f"/instances/{instance.pk}/",
                  "/requests/new/grant/", "/requests/new/replica/", "/requests/search/?q=walk"],
        "bob": [f"/requests/{change.pk}/"],
        "carol": [f"/audit/events/{event.seq}/"],
        "admin": [f"/teams/{Team.objects.get(name='payments').pk}/",
                  f"/policies/{ApprovalPolicy.objects.order_by('pk').first().pk}/", f"/instances/{instance.pk}/",
                  "/instances/register/"],
    }
    return pages.get(username, [])


def shot_name(path: str) -> str:
    return path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-") or "home"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("username", PERSONAS)
def test_every_main_page_fits_a_phone_and_a_desktop(people, managed_instance, browser, live_server, login,
                                                    axe_violations, username):
    from tests.e2e.conftest import ARTIFACTS

    # given a pending request of alice's and a rejected one, so lists and queues have rows
    payments = Team.objects.get(name="payments")
    change = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                            team=payments, justification="responsive walk",
                            payload={"database": "app", "name": "responsive_walk"})
    rejected = request_submit(user=people["alice"], actor_ip=None, type="schema", instance=managed_instance,
                              team=payments, justification="responsive walk, rejected",
                              payload={"database": "app", "name": "responsive_rejected"})
    request_reject(request=rejected, reviewer=people["bob"], actor_ip=None, comment="name clash")
    out = ARTIFACTS / "responsive"
    out.mkdir(parents=True, exist_ok=True)
    problems: dict[str, object] = {}
    for width_name, viewport in VIEWPORTS.items():
        context = browser.new_context(viewport=viewport)
        track_requests(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg, errors=errors: errors.append(msg.text) if msg.type == "error" else None)
        # when the persona signs in at this width and opens every page of their navigation
        login(page, username, PASSWORD)
        links = page.locator("nav[aria-label='Main'] a")
        hrefs = links.evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert hrefs, "no navigation"
        if width_name == "phone":
            # the navigation is hidden behind the menu button and opens as an offcanvas panel
            assert not page.locator("#sidebar").is_visible()
            page.locator("#menu-toggle").click()
            page.locator("#sidebar.show").wait_for()
            assert links.first.is_visible()
            page.screenshot(path=str(out / f"{username}-menu-{width_name}.png"))
            page.keyboard.press("Escape")
            page.locator("#sidebar.show").wait_for(state="detached")
        else:
            assert links.first.is_visible() and not page.locator("#menu-toggle").is_visible()
        for path in dict.fromkeys(hrefs + extra_pages(username, change, rejected, managed_instance)):
            response = page.goto(live_server.url + path)
            assert response is not None and response.status == 200, (path, response and response.status)
            wait_settled(page)
            # then nothing is wider than the window, and axe-core finds nothing serious
            size = page.evaluate(OVERFLOW)
            if size["scroll"] > size["inner"]:
                problems[f"{width_name} {path} overflow"] = size
            if violations := axe_violations(page):
                problems[f"{width_name} {path} axe"] = [(v["id"], len(v["nodes"])) for v in violations]
            page.screenshot(path=str(out / f"{username}-{shot_name(path)}-{width_name}.png"), full_page=True)
        if errors:
            problems[f"{width_name} console"] = errors
        context.close()
    assert not problems, "\n".join(f"{key}: {value}" for key, value in problems.items())
