"""Browser journey of a developer: a login role with the live SQL preview, applied by a real worker
while the page watches, the password revealed exactly once and working on the cluster."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.urls import reverse

from portal.models import ChangeRequest
from portal.services.requests import request_approve
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_alice_requests_a_login_role_watches_it_apply_and_reveals_the_password_once(
    people, managed_cluster, managed_instance, celery_worker, wait_for_status, page, login, screenshot,
    axe_violations, live_server,
):
    name = f"svc_{uuid.uuid4().hex[:8]}"
    # given alice on the new-request page / when she picks "Role" and fills the form
    login(page, "alice", PASSWORD)
    page.goto(live_server.url + "/requests/new/")
    page.locator(f"a[href='{reverse('request-new-form', args=['role'])}']").click()
    page.locator("#request-form").wait_for()
    page.locator("[name=justification]").fill("the billing service connects with its own role")
    page.locator("[name=name]").fill(name)
    login_box = page.get_by_label("Can log in (LOGIN)")
    if not login_box.is_checked():
        login_box.check()
    # then the live plan shows the exact SQL, with a placeholder instead of any secret
    preview = page.locator("#preview")
    preview.filter(has_text=name).wait_for(timeout=30_000)
    assert "CREATE ROLE" in preview.inner_text()
    assert "generated at apply time" in preview.inner_text()
    assert axe_violations(page) == []
    screenshot(page, "alice-new-role-preview")

    # when she submits, she lands on the request page
    page.locator("#submit-request").click()
    page.wait_for_url(lambda url: "/requests/new" not in url)
    change = ChangeRequest.objects.get(payload__name=name)
    assert f"/requests/{change.pk}/" in page.url

    # and bob approves (his own journey is in test_journeys.py); the worker applies it while
    # alice's page updates itself, without a reload
    request_approve(request=change, reviewer=people["bob"], comment="ok", actor_ip=None)
    assert wait_for_status(change.pk, {"applied", "failed"}, timeout=120).status == "applied"
    page.locator('[data-status="applied"]').first.wait_for(timeout=30_000)
    page.locator("#reveal-password").wait_for(timeout=30_000)
    screenshot(page, "alice-request-applied")

    # then she reveals the password once, and it logs in to the cluster
    page.locator("#reveal-password").click()
    password = page.locator("#revealed-password").input_value(timeout=30_000)
    assert len(password) >= 24
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name
    # and after a reload it is gone for good
    page.reload()
    page.locator("#reveal-gone").wait_for(timeout=30_000)
    assert password not in page.content()
    assert page.console_errors == []  # type: ignore[attr-defined]
