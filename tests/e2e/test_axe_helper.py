"""The accessibility check itself: axe reads the colours a page rests at, not a frame of a fade."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e

CONTRAST_ONLY = """async () => JSON.stringify(
  (await axe.run(document, {runOnly: ['color-contrast'], resultTypes: ['violations']})).violations)"""
# Holds every CSS transition running now at 100 ms of Bootstrap's 150 ms .btn fade: about where CI
# caught it (contrast ~2:1). Halfway the text is as light as its background (1:1), which axe files
# as "incomplete" rather than as a violation, so it would prove nothing.
HOLD_FADES_HALFWAY = """() => {
  const fades = document.getAnimations().filter((a) => a instanceof CSSTransition);
  fades.forEach((a) => { a.pause(); a.currentTime = 100; });
  return fades.length;
}"""
# Lets them go on twenty times slower: their last 50 ms take a second, longer than an axe run.
RELEASE_FADES_SLOWLY = """() => document.getAnimations().filter((a) => a instanceof CSSTransition)
  .forEach((a) => { a.playbackRate = 0.05; a.play(); })"""


@pytest.mark.django_db(transaction=True)
def test_axe_waits_for_a_hover_fade_to_finish(people, page, login, axe_violations, live_server):
    # given carol's verify page, the pointer on the outlined "Verify now" button, its fade into
    # the hover colours held two thirds of the way
    login(page, "carol", PASSWORD)
    page.goto(live_server.url + "/audit/verify/")
    page.add_script_tag(url=live_server.url + "/static/vendor/axe/axe.min.js")
    page.get_by_role("button", name="Verify now").hover()
    assert page.evaluate(HOLD_FADES_HALFWAY) > 0
    # then axe run as it is measures the in-between colours (the failure CI once met) ...
    assert [v["id"] for v in json.loads(page.evaluate(CONTRAST_ONLY))] == ["color-contrast"]
    # ... and while the fade goes on, the helper waits for it and finds the resting hover colours fine
    page.evaluate(RELEASE_FADES_SLOWLY)
    assert axe_violations(page) == []
    assert page.console_errors == []  # type: ignore[attr-defined]
