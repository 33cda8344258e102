"""Browser journey (#18): a reviewer opens an access review, a team lead keeps one privilege and
revokes another (gone on the cluster once the worker applies it), a third is left unanswered past
the deadline and revoked by the deadline job, and an auditor downloads the campaign's report.

Real Chromium against the live server, a real cluster and a real Celery worker.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone
from pypdf import PdfReader

from portal.models import AccessReviewCampaign, AccessReviewItem
from portal.services.access_review_decisions import campaigns_process_deadlines
from tests.fixtures.people import PASSWORD
from tests.portal.test_access_reviews import _privilege, reviewed_world  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e


def test_open_a_campaign_decide_it_let_the_deadline_act_and_download_the_report(
    reviewed_world, people, managed_cluster, managed_instance, wait_for_status, page, login,  # noqa: F811
    screenshot, axe_violations, live_server,
):
    w = reviewed_world
    schema = w["schema"]
    # bob (reviewer) opens a campaign over the demo instance, revoking what stays unanswered
    login(page, "bob", PASSWORD)
    page.goto(live_server.url + "/access-reviews/")
    page.locator("#open-campaign").click()
    page.wait_for_url("**/access-reviews/new/")
    assert axe_violations(page) == []
    page.get_by_label("Name").fill("Browser recertification")
    page.locator("#field-instances").get_by_label("demo").check()
    deadline = (timezone.now() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Deadline").fill(deadline)
    page.get_by_label("revoke", exact=True).check()
    page.get_by_label("Fallback certifier").select_option("admin")
    page.locator("#open-campaign-submit").click()
    page.wait_for_url("**/access-reviews/*/")
    campaign = AccessReviewCampaign.objects.get(name="Browser recertification")
    assert f"Campaign #{campaign.pk} opened" in page.content()
    assert axe_violations(page) == []
    screenshot(page, "bob-access-review-opened")

    items = {(i.role, i.kind): i for i in AccessReviewItem.objects.filter(campaign=campaign, schema=schema)}
    bot, select_item, usage = items[(w["bot"], "grant")], items[(w["outside"], "tables")], items[(w["outside"],
                                                                                                   "schema")]
    assert {bot.certifier.username, select_item.certifier.username, usage.certifier.username} == {"alice"}

    # alice (the payments lead) sees her queue with the evidence, filtered to the schema
    page.context.clear_cookies()
    login(page, "alice", PASSWORD)
    page.locator("#nav-access-review-list").click()
    page.locator(f"#campaign-{campaign.pk} a").first.click()
    page.locator("#f-schema").fill(schema)
    page.locator("#apply-filters").click()
    row = page.locator(f"#item-{bot.pk}")
    assert "dave" in row.inner_text() and "portal grant" in row.inner_text()
    assert "outside the portal" in page.locator(f"#item-{select_item.pk}").inner_text()
    assert axe_violations(page) == []
    screenshot(page, "alice-access-review-queue")

    # she keeps the analytics grant: ticked with the keyboard (j moves, x ticks), decided with a comment
    page.locator(f"#item-{bot.pk}").focus()
    page.keyboard.press("x")
    assert page.locator(f"#tick-{bot.pk}").is_checked()
    page.locator("#decision-keep").check()
    page.locator("#decide-comment").fill("analytics still reads the ledger")
    page.locator("#decide-open").click()
    page.locator("#confirm-decision").wait_for(state="visible")
    assert page.locator("#ticked-count").inner_text() == "1"
    page.locator("#decide-confirm").click()
    page.wait_for_load_state()
    assert "1 item(s): keep." in page.content()

    # and revokes the SELECT granted outside the portal
    page.locator(f"#tick-{select_item.pk}").check()
    page.locator("#decision-revoke").check()
    page.locator("#decide-comment").fill("nobody asked for this")
    page.locator("#decide-open").click()
    page.locator("#confirm-decision").wait_for(state="visible")
    page.locator("#decide-confirm").click()
    page.wait_for_load_state()
    assert "Revoke requests are queued." in page.content()
    select_item.refresh_from_db()
    assert wait_for_status(select_item.revoke_request_id, {"applied", "failed"}, timeout=120).status == "applied"
    assert not _privilege(managed_cluster, "SELECT has_table_privilege(%s, %s, 'SELECT')", w["outside"],
                          f"{schema}.ledger")

    # the USAGE stays unanswered; the deadline passes and the deadline job revokes it
    others = AccessReviewItem.objects.filter(campaign=campaign, decision="").exclude(pk=usage.pk)
    for item in others:  # leftovers of other tests on the shared cluster: not this journey's business
        AccessReviewItem.objects.filter(pk=item.pk).update(decision="keep", comment="other test",
                                                           decided_at=timezone.now(), decided_by=item.certifier)
    AccessReviewCampaign.objects.filter(pk=campaign.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert campaigns_process_deadlines() == [campaign.pk]
    usage.refresh_from_db()
    assert usage.decision == "revoke" and usage.decided_by is None
    assert wait_for_status(usage.revoke_request_id, {"applied", "failed"}, timeout=120).status == "applied"
    assert not _privilege(managed_cluster, "SELECT has_schema_privilege(%s, %s, 'USAGE')", w["outside"], schema)

    # carol (auditor) downloads the report as CSV and PDF
    page.context.clear_cookies()
    login(page, "carol", PASSWORD)
    page.goto(f"{live_server.url}/access-reviews/{campaign.pk}/")
    assert page.locator("#campaign-status").inner_text() == "closed"
    screenshot(page, "carol-access-review-closed")
    with page.expect_download() as csv_download:
        page.locator("#report-csv").click()
    text = open(csv_download.value.path(), encoding="utf-8").read()
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("item,"))
    rows = {r["item"]: r for r in csv.DictReader(io.StringIO("\n".join(lines[header_at:])))}
    assert rows[str(bot.pk)]["decision"] == "keep" and rows[str(bot.pk)]["decided_by"] == "alice"
    assert rows[str(select_item.pk)]["revoke_status"] == "applied"
    assert rows[str(usage.pk)]["decided_by"] == "system" and rows[str(usage.pk)]["revoke_applied_at"]
    assert "# completion_rate,100.0%" in text
    with page.expect_download() as pdf_download:
        page.locator("#report-pdf").click()
    assert pdf_download.value.suggested_filename == f"access-review-{campaign.pk}.pdf"
    pdf_text = "".join("\n".join(p.extract_text() for p in PdfReader(pdf_download.value.path()).pages).split())
    assert "Accessreviewreport" in pdf_text and "nobodyaskedforthis" in pdf_text
    assert page.console_errors == []
