"""Browser journey of a developer: a schema whose live SQL preview follows her typing; a login role
applied by a real worker while the page watches (no reload), its password revealed exactly once and
working on the cluster; then read access for that role."""

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
def test_alice_requests_a_schema_a_login_role_and_read_access_watching_the_preview_and_the_apply(
    people, managed_cluster, managed_instance, celery_worker, wait_for_status, page, login, screenshot,
    axe_violations, live_server,
):
    name = f"svc_{uuid.uuid4().hex[:8]}"
    login(page, "alice", PASSWORD)

    # a schema: the plan preview follows the name as she types it, and is replaced, not appended to
    page.goto(live_server.url + "/requests/new/")
    page.locator(f"a[href='{reverse('request-new-form', args=['schema'])}']").click()
    page.locator("#request-form").wait_for()
    page.locator("[name=justification]").fill("the ledger gets its own schema")
    database = page.locator("[name=database]")  # a drop-down once the instance has an inventory
    if database.evaluate("element => element.tagName") == "SELECT":
        database.select_option("app")
    else:
        database.fill("app")
    preview = page.locator("#preview")
    page.locator("[name=name]").fill(f"{name}_draft")
    preview.filter(has_text=f'CREATE SCHEMA "{name}_draft"').wait_for(timeout=30_000)
    page.locator("[name=name]").fill(f"{name}_ledger")
    preview.filter(has_text=f'CREATE SCHEMA "{name}_ledger"').wait_for(timeout=30_000)
    assert f"{name}_draft" not in preview.inner_text()
    assert axe_violations(page) == []
    screenshot(page, "alice-new-schema-preview")
    page.locator("#submit-request").click()
    page.wait_for_url(lambda url: "/requests/new" not in url)
    schema_request = ChangeRequest.objects.get(type="schema", payload__name=f"{name}_ledger")
    assert f"/requests/{schema_request.pk}/" in page.url and schema_request.status == "submitted"
    assert axe_violations(page) == []
    screenshot(page, "alice-request-submitted")

    # given alice on the new-request page / when she picks "Role" and fills the form
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
    # A mark on this document: a reload or a navigation would take it away.
    page.evaluate("() => { window.__sameDocument = true; }")

    # and bob approves (his own journey is in test_journeys.py); the worker applies it while
    # alice's page updates itself, without a reload
    for approved in (schema_request, change):
        request_approve(request=approved, reviewer=people["bob"], comment="ok", actor_ip=None)
    assert wait_for_status(change.pk, {"applied", "failed"}, timeout=120).status == "applied"
    assert wait_for_status(schema_request.pk, {"applied", "failed"}, timeout=120).status == "applied"
    page.locator('[data-status="applied"]').first.wait_for(timeout=30_000)
    page.locator("#reveal-password").wait_for(timeout=30_000)
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded to show the status"
    assert axe_violations(page) == []
    screenshot(page, "alice-request-applied")

    # then she reveals the password once, and it logs in to the cluster
    page.locator("#reveal-password").click()
    password = page.locator("#revealed-password").input_value(timeout=30_000)
    assert page.locator("#reveal-password").count() == 0  # no second reveal offered
    assert len(password) >= 24
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name
    # and after a reload it is gone for good
    page.reload()
    page.locator("#reveal-gone").wait_for(timeout=30_000)
    assert password not in page.content()
    assert page.locator("#reveal-password").count() == 0

    # read access for the new role on the new schema (the portal grants on the schemas it manages):
    # both are in the instance's inventory now, so she picks them from drop-downs
    page.goto(live_server.url + "/requests/new/")
    page.locator(f"a[href='{reverse('request-new-form', args=['grant'])}']").click()
    page.locator("#request-form").wait_for()
    page.locator("[name=justification]").fill("the billing service reads the ledger")
    page.locator("select[name=role]").select_option(name)
    page.locator("select[name=database]").select_option("app")
    page.locator(f"select[name=schema] option[value={name}_ledger]").wait_for(state="attached", timeout=30_000)
    page.locator("select[name=schema]").select_option(f"{name}_ledger")
    # Choosing the schema re-renders the fields (its tables): tick SELECT in the new ones, not in
    # the ones about to be replaced.
    page.wait_for_load_state("networkidle")
    page.get_by_label("SELECT", exact=True).check()
    preview.filter(has_text=f'GRANT SELECT ON ALL TABLES IN SCHEMA "{name}_ledger" TO "{name}"').wait_for(
        timeout=30_000)
    assert axe_violations(page) == []
    screenshot(page, "alice-new-grant-preview")
    page.locator("#submit-request").click()
    page.wait_for_url(lambda url: "/requests/new" not in url)
    grant = ChangeRequest.objects.get(type="grant", payload__role=name)
    assert grant.payload["privileges"] == ["SELECT"] and grant.payload["schema"] == f"{name}_ledger"
    assert f"/requests/{grant.pk}/" in page.url
    assert page.console_errors == []  # type: ignore[attr-defined]
