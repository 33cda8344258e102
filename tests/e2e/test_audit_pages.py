"""carol in the browser: the audit log with its drawer, verify now, exports, entitlements."""

from __future__ import annotations

import pytest

from tests.audit.world import build_world
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_carol_filters_the_log_opens_an_event_and_verifies(people, page, login, screenshot, axe_violations,
                                                           live_server):
    world = build_world(people)
    login(page, "carol", PASSWORD)
    # her home is the audit log
    assert page.locator("h1").inner_text() == "Audit log"
    page.get_by_label("Request #").fill(str(world.grant_request.pk))
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit-table tbody tr")
    assert rows.count() == 5
    # the drawer shows the full record with its statement and hash
    rows.nth(1).locator("a", has_text="Details").click()
    drawer = page.locator("#event-drawer")
    drawer.locator("pre.sql").wait_for()
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA public" in drawer.inner_text()
    assert axe_violations(page) == []
    screenshot(page, "carol-audit-drawer")
    drawer.get_by_role("button", name="Close").click()
    # verify now: OK with the head hash
    page.get_by_role("button", name="Verify now").click()
    page.locator(".verify-ok").wait_for()
    assert "OK" in page.locator("#verify-result").inner_text()
    screenshot(page, "carol-audit-log")
    assert axe_violations(page) == []
    # entitlements and exports pages
    for path, name in (("/entitlements/?at=2999-01-01", "carol-entitlements"), ("/audit/exports/", "carol-exports"),
                       ("/audit/verify/", "carol-verify")):
        page.goto(live_server.url + path)
        assert axe_violations(page) == []
        screenshot(page, name)
    assert page.console_errors == []  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_carol_downloads_the_filtered_period_as_csv_and_pdf(people, page, login, live_server):
    import csv
    import io

    world = build_world(people)
    login(page, "carol", PASSWORD)
    # given the log filtered to one request
    page.get_by_label("Request #").fill(str(world.grant_request.pk))
    page.get_by_role("button", name="Filter").click()
    page.locator("table.audit-table tbody tr").first.wait_for()
    # when she downloads the CSV: it holds exactly that request's events
    with page.expect_download() as csv_download:
        page.get_by_role("link", name="CSV").click()
    rows = list(csv.DictReader(io.StringIO(open(csv_download.value.path(), encoding="utf-8").read())))
    assert rows and {row["request_id"] for row in rows} == {str(world.grant_request.pk)}
    assert csv_download.value.suggested_filename.endswith(".csv")
    # and the PDF compliance report of the same period
    with page.expect_download(timeout=120_000) as pdf_download:
        page.get_by_role("link", name="PDF report").click()
    from pypdf import PdfReader

    reader = PdfReader(pdf_download.value.path())  # the file the browser saved, opened as a PDF
    text = "\n".join(pdf_page.extract_text() for pdf_page in reader.pages)
    assert "Audit compliance report" in text and f"#{world.grant_request.pk}" in text
    assert pdf_download.value.suggested_filename.endswith(".pdf")
    assert page.console_errors == []  # type: ignore[attr-defined]
