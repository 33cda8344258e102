"""Browser journeys: Debian's Chromium driven by Playwright against a live test server."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the tests' ORM calls are still
    # synchronous and single-threaded, which is what Django's guard protects.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed: `apt-get install -y chromium` (.ci/run does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.console_errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()


@pytest.fixture
def screenshot():
    """screenshot(page, "alice-home") keeps artifacts/screenshots/alice-home.png."""

    def take(page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def login(live_server):
    def sign_in(page, username: str, password: str) -> None:
        page.goto(live_server.url + "/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)

    return sign_in


# What networkidle waits for (no request in flight), counted in the page itself from the
# document's start: the XHRs htmx sends and fetch calls (portal.js). networkidle then waits a fixed
# 500 ms of silence every time; wait_settled returns once nothing is in flight, no htmx swap or
# settle is pending and nothing has started or ended for 200 ms (an `intersect` or `load` trigger
# fires within a frame of the layout; a timer-paced poll of seconds is not waited for, as before).
TRACK_REQUESTS = """(() => {
  const state = {inflight: 0, changed: performance.now()};
  window.__e2eRequests = state;
  const touch = () => { state.changed = performance.now(); };
  const end = () => { state.inflight--; touch(); };
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (...args) {
    state.inflight++; touch();
    this.addEventListener('loadend', end, {once: true});
    return send.apply(this, args);
  };
  const fetch = window.fetch;
  window.fetch = function (...args) { state.inflight++; touch(); return fetch.apply(window, args).finally(end); };
  addEventListener('load', touch);
})();"""

SETTLED = """(quiet) => {
  const state = window.__e2eRequests;
  return document.readyState === 'complete' && state !== undefined && state.inflight === 0
    && document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling') === null
    && performance.now() - state.changed >= quiet;
}"""


def track_requests(context) -> None:
    """Count the requests of every page of `context` (before any page script runs): wait_settled needs it."""
    context.add_init_script(TRACK_REQUESTS)


def wait_settled(page, quiet_ms: int = 200) -> None:
    """Wait until the page has loaded and its own requests are done (see TRACK_REQUESTS)."""
    page.wait_for_function(SETTLED, arg=quiet_ms, polling=50, timeout=30_000)


# getAnimations() flushes pending style changes first, so a transition a class change has just
# started is in the list too; one started later by a timer (Bootstrap shows a modal after its
# backdrop's fade) is caught by the next round.
AXE_AFTER_TRANSITIONS = """async () => {
  // Bootstrap shows a modal from a timer after its backdrop's fade: wait for what runs, then look
  // again, a little later, for transitions that were not there before. Timers, not animation
  // frames: Chromium throttles the frames of a page that is not in front (a second browser
  // context). Bounded (4 rounds, 2 s): a page that keeps starting finite animations must not hold
  // the test.
  const pause = () => new Promise((resolve) => setTimeout(resolve, 50));
  const deadline = performance.now() + 2000;
  const seen = new Set();
  for (let round = 0; round < 4 && performance.now() < deadline; round++) {
    if (round > 0) await pause();
    const fresh = document.getAnimations().filter((a) => !seen.has(a) && a.playState !== 'finished'
      && Number.isFinite(a.effect?.getComputedTiming().endTime ?? Infinity));
    if (fresh.length === 0) break;
    fresh.forEach((a) => seen.add(a));
    const left = Math.max(0, deadline - performance.now());
    await Promise.race([Promise.all(fresh.map((a) => a.finished.catch(() => null))),
                        new Promise((resolve) => setTimeout(resolve, left))]);
  }
  return JSON.stringify(await axe.run(document, {resultTypes: ['violations']}));
}"""


@pytest.fixture
def axe_violations(live_server):
    """axe_violations(page) -> serious/critical axe-core findings on the current page.

    axe-core is vendored and served from our own origin, so the page's CSP admits it. Finite CSS
    transitions and animations are let finish first: axe reads computed colours, and a button
    still fading into its hover colours (Bootstrap's .15 s) measures a contrast no user ever
    sees at rest. Infinite ones (spinners) never finish and are left running.
    """

    def run(page) -> list[dict]:
        page.add_script_tag(url=live_server.url + "/static/vendor/axe/axe.min.js")
        result = page.evaluate(AXE_AFTER_TRANSITIONS)
        violations = json.loads(result)["violations"]
        return [v for v in violations if v.get("impact") in ("serious", "critical")]

    return run
