"""Browser journey through single sign-on (#17): Erin signs in at a real OpenID provider (its own
login form, its own process), lands in team payments as a developer because of her groups, asks
for a login role that a real worker creates; the provider then drops her from the group, her next
sign-in is refused, and the offboarding takes her role's LOGIN away on the cluster."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from portal.choices import MembershipRole, Persona
from portal.models import ChangeRequest, GroupMapping, Membership, Team
from portal.services.requests import request_approve
from tests.identity.provider_process import OidcProvider, portal_settings

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider_for_live_server(live_server, tmp_path):
    provider = OidcProvider(tmp_path / "provider", [live_server.url + "/login/oidc/callback/"])
    provider.start()
    try:
        with portal_settings(provider):
            yield provider
    finally:
        provider.stop()


def sign_in_at_provider(page, live_server, username: str) -> None:
    page.goto(live_server.url + "/login/")
    page.locator("#oidc-sign-in").click()
    page.locator("input[name=login]").wait_for(timeout=30_000)  # the provider's own form, at the provider
    assert page.url.startswith("http://127.0.0.1:")
    page.locator("input[name=login]").fill(username)
    page.locator("input[name=password]").fill("any password at the provider")
    page.locator("button[type=submit]").click()


@pytest.mark.django_db(transaction=True)
def test_erin_signs_in_through_the_provider_gets_a_role_and_loses_it_when_dropped_from_the_group(
    people, managed_cluster, managed_instance, celery_worker, wait_for_status, page, screenshot, axe_violations,
    live_server, provider_for_live_server,
):
    provider = provider_for_live_server
    payments = Team.objects.get(name="payments")
    GroupMapping.objects.create(group="db-payments", team=payments, team_role=MembershipRole.MEMBER)
    GroupMapping.objects.create(group="db-developers", persona=Persona.REQUESTERS)
    provider.set_users({"erin": {"name": "Erin Example", "email": "erin@corp.test",
                                 "groups": ["db-payments", "db-developers"]}})
    name = f"erin_{uuid.uuid4().hex[:8]}"
    # Nothing leaves the machine: the provider's page links a web font on the internet.
    page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), lambda route: route.abort())
    portal_errors: list[str] = []
    page.on("response", lambda response: portal_errors.append(
        f"{response.status} {urlsplit(response.url).path}")
        if response.url.startswith(live_server.url) and response.status >= 400 else None)

    # given the login page offers the provider / when Erin signs in there
    page.goto(live_server.url + "/login/")
    assert page.locator("#oidc-sign-in").inner_text().strip() == "Sign in with Test IdP"
    assert axe_violations(page) == []
    screenshot(page, "sso-login-page")
    sign_in_at_provider(page, live_server, "erin")
    page.wait_for_url(lambda url: url.startswith(live_server.url) and "/login" not in url, timeout=30_000)

    # then she is in team payments with the developer persona
    erin = User.objects.get(username="erin")
    assert Membership.objects.get(user=erin, team=payments).role == MembershipRole.MEMBER
    assert set(erin.groups.values_list("name", flat=True)) == {"requesters"}
    menu = page.locator("#user-menu").inner_text()
    assert "erin" in menu and "payments" in menu
    screenshot(page, "sso-erin-home")

    # when she asks for a login role through the UI, bob approves and the worker applies it
    page.goto(live_server.url + "/requests/new/")
    page.locator(f"a[href='{reverse('request-new-form', args=['role'])}']").click()
    page.locator("#request-form").wait_for()
    page.locator("[name=justification]").fill("erin's reporting job connects with its own role")
    page.locator("[name=name]").fill(name)
    login_box = page.get_by_label("Can log in (LOGIN)")
    if not login_box.is_checked():
        login_box.check()
    page.locator("#preview").filter(has_text=name).wait_for(timeout=30_000)
    page.locator("#submit-request").click()
    page.wait_for_url(lambda url: "/requests/new" not in url)
    role_request = ChangeRequest.objects.get(type="role", payload__name=name)
    assert role_request.requester == erin and role_request.team == payments
    request_approve(request=role_request, reviewer=people["bob"], comment="ok", actor_ip=None)
    assert wait_for_status(role_request.pk, {"applied", "failed"}, timeout=120).status == "applied"
    page.locator("#reveal-password").wait_for(timeout=30_000)
    page.locator("#reveal-password").click()
    password = page.locator("#revealed-password").input_value(timeout=30_000)
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name

    # when the provider drops her from every mapped group, and she signs in again
    provider.set_groups("erin", ["all-staff"])
    page.locator("#user-menu").click()
    page.locator("#sign-out").click()
    page.wait_for_url(lambda url: "/login/" in url)
    page.locator("#oidc-sign-in").click()  # still signed in at the provider: straight back
    page.locator("#oidc-problem").wait_for(timeout=30_000)

    # then the portal refuses her with a clear page, and her account is deactivated and offboarded
    assert "no longer lists the user in any mapped group" in page.locator("#oidc-problem").inner_text()
    assert axe_violations(page) == []
    screenshot(page, "sso-erin-refused")
    erin.refresh_from_db()
    assert not erin.is_active
    disable = ChangeRequest.objects.get(type="disable", payload__role=name)
    assert disable.requester is None  # a system request, filed by the portal

    # and the worker takes LOGIN away from her role on the cluster
    assert wait_for_status(disable.pk, {"applied", "failed"}, timeout=120).status == "applied"
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="postgres", user="postgres",
                         password=managed_cluster.admin_password, connect_timeout=5) as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [name]).fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                        connect_timeout=5).close()
    # The portal answered nothing but the one refusal with an error status (the provider's own
    # development pages ask for a web font and a favicon it has not: its errors, not ours).
    assert portal_errors == ["403 /login/oidc/callback/"]


@pytest.mark.django_db(transaction=True)
def test_admin_maps_groups_on_the_sign_in_groups_page(people, page, login, screenshot, axe_violations, live_server):
    from tests.fixtures.people import PASSWORD

    login(page, "admin", PASSWORD)
    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign-in groups").click()
    page.locator(".empty-state").wait_for()
    assert axe_violations(page) == []
    # a mapping with both a team and a persona comes back with the reason, the input kept
    page.locator("#id_group").fill("db-payments-leads")
    page.get_by_label("Team", exact=True).select_option("payments")
    page.get_by_label("Persona", exact=True).select_option("auditors")
    page.locator("#add-mapping").click()
    page.locator("#form-errors").wait_for()
    assert "exactly one" in page.locator("#form-errors").inner_text()
    assert page.locator("#id_group").input_value() == "db-payments-leads"
    page.get_by_label("Persona", exact=True).select_option("")
    page.get_by_label("Role in the team").select_option("lead")
    page.locator("#add-mapping").click()
    row = page.locator("#mapping-table tbody tr").first
    row.wait_for()
    assert "db-payments-leads" in row.inner_text() and "payments" in row.inner_text() and "lead" in row.inner_text()
    assert axe_violations(page) == []
    screenshot(page, "admin-sign-in-groups")
    # deleting asks first, restating what members lose
    row.get_by_role("link", name="Edit").click()
    page.locator("#mapping-delete").click()
    page.locator("#delete-modal").wait_for(state="visible")
    assert "team payments (lead)" in page.locator("#delete-modal .modal-body").inner_text()
    page.locator("#confirm-delete").click()
    page.locator(".empty-state").wait_for()
    assert GroupMapping.objects.count() == 0
    # the one refused form (400, as every admin form answers a bad input), nothing else
    assert [e for e in page.console_errors if "400" not in e] == []  # type: ignore[attr-defined]
    assert len(page.console_errors) == 1  # type: ignore[attr-defined]
