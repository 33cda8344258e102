"""MFA for local accounts (#17): TOTP enrolment with a QR code, sign-in with a code (computed here
from the device's secret), refusal without one for an admin outside the demo, recovery codes,
removal, password change; the demo's personas keep signing in with the password."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client, override_settings
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from audit.models import AuditEvent
from portal.conf import Config
from tests.fixtures.people import PASSWORD

REQUIRED = override_settings(MFA_REQUIRED_FOR_ADMINS=True)


@pytest.fixture(autouse=True)
def _login_throttle_reset():
    """POST /api/v1/auth/token/ allows 30 a minute per address (LoginThrottle): these tests sign in
    often, from the same test client address, in the same Redis as the rest of the suite."""
    cache.delete("throttle_login_127.0.0.1")
    yield
    cache.delete("throttle_login_127.0.0.1")


def _code(device: TOTPDevice) -> str:
    """The code the user's app shows now. django-otp refuses a time step already used (replay), so
    each use in a test starts from a fresh step record and no throttle."""
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1, throttling_failure_count=0,
                                                   throttling_failure_timestamp=None)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return str(totp.token()).zfill(device.digits)


def _sign_in(client: Client, username: str, password: str = PASSWORD):
    return client.post("/login/", {"username": username, "password": password})


def _enrol(client: Client, user) -> TOTPDevice:
    page = client.get("/account/mfa/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<svg' in html and 'id="mfa-qr"' in html  # the QR code inline, no image request
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert device.config_url.startswith("otpauth://totp/")
    done = client.post("/account/mfa/", {"code": _code(device)})
    assert done.status_code == 200 and 'id="recovery-codes"' in done.content.decode()
    device.refresh_from_db()
    assert device.confirmed
    return device


@REQUIRED
def test_an_admin_outside_the_demo_must_enrol_then_signs_in_with_a_code(people):
    admin = people["admin"]
    web = Client()
    # when the admin signs in with the password only
    response = _sign_in(web, "admin")
    # then every page sends them to enrolment, and the API over this session refuses
    assert response.status_code == 302 and response["Location"] == "/account/mfa/"
    assert web.get("/instances/")["Location"] == "/account/mfa/"
    assert web.get("/api/v1/teams/").status_code == 403
    # and a token cannot be had without enrolling
    refused = APIClient().post("/api/v1/auth/token/", {"username": "admin", "password": PASSWORD}, format="json")
    assert refused.status_code == 403
    assert AuditEvent.objects.filter(action="auth.mfa_failed", actor="admin", outcome="refused").exists()
    # when they enrol with a code from the app
    device = _enrol(web, admin)
    assert AuditEvent.objects.filter(action="auth.mfa_enrolled", actor="admin", outcome="ok").exists()
    assert web.get("/instances/").status_code == 200
    # then the next password sign-in asks for the code, and a wrong one is refused and audited
    web.post("/logout/")
    again = _sign_in(web, "admin")
    assert again.status_code == 302 and again["Location"].startswith("/account/mfa/verify/")
    assert web.get("/instances/")["Location"] == "/account/mfa/verify/"
    wrong = web.post("/account/mfa/verify/", {"code": "000000"})
    assert wrong.status_code == 400
    assert AuditEvent.objects.filter(action="auth.mfa_failed", actor="admin", details__channel="web").exists()
    right = web.post("/account/mfa/verify/", {"code": _code(device), "next": "/instances/"})
    assert right.status_code == 302 and right["Location"] == "/instances/"
    assert web.get("/instances/").status_code == 200
    # and the API gives a token only with the code
    api = APIClient()
    assert api.post("/api/v1/auth/token/", {"username": "admin", "password": PASSWORD},
                    format="json").status_code == 403
    token = api.post("/api/v1/auth/token/", {"username": "admin", "password": PASSWORD, "otp": _code(device)},
                     format="json")
    assert token.status_code == 200 and token.json()["token"].startswith("dbp_")


@REQUIRED
def test_a_code_is_used_once_and_a_recovery_code_signs_in_once(people):
    web = Client()
    _sign_in(web, "admin")
    device = _enrol(web, people["admin"])
    code = _code(device)
    web.post("/logout/")
    _sign_in(web, "admin")
    assert web.post("/account/mfa/verify/", {"code": code}).status_code == 302
    web.post("/logout/")
    _sign_in(web, "admin")
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
    assert web.post("/account/mfa/verify/", {"code": code}).status_code == 400  # the same step again: replay
    recovery = StaticToken.objects.filter(device__user=people["admin"]).first().token
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
    assert web.post("/account/mfa/verify/", {"code": recovery}).status_code == 302
    assert not StaticToken.objects.filter(token=recovery).exists()
    assert AuditEvent.objects.filter(action="auth.mfa_verified", details__method="recovery code").exists()


def test_the_demo_keeps_the_password_only_sign_in_and_the_token_endpoint(people):
    # given the demo's settings (PORTAL_ENVIRONMENT=demo: MFA not required), as the test settings are
    web = Client()
    response = _sign_in(web, "admin")
    assert response.status_code == 302 and response["Location"] == "/"
    assert web.get("/instances/").status_code == 200
    for username in ("admin", "alice", "bob", "carol", "dave"):
        answer = APIClient().post("/api/v1/auth/token/", {"username": username, "password": PASSWORD}, format="json")
        assert answer.status_code == 200, username
    # and enrolment is offered, not forced
    assert web.get("/account/mfa/").status_code == 200


def test_the_demo_is_detected_from_the_environment_and_the_variable_wins():
    assert Config.from_env({"PORTAL_ENVIRONMENT": "demo"}).mfa_required_for_admins is False
    assert Config.from_env({}).mfa_required_for_admins is False  # the default environment is the demo
    assert Config.from_env({"PORTAL_ENVIRONMENT": "production"}).mfa_required_for_admins is True
    assert Config.from_env({"PORTAL_ENVIRONMENT": "production",
                            "PORTAL_MFA_REQUIRED_FOR_ADMINS": "off"}).mfa_required_for_admins is False
    assert Config.from_env({"PORTAL_MFA_REQUIRED_FOR_ADMINS": "on"}).mfa_required_for_admins is True


def test_a_developer_who_enrolled_is_asked_for_a_code_too(people):
    web = Client()
    _sign_in(web, "alice")
    device = _enrol(web, people["alice"])
    web.post("/logout/")
    assert _sign_in(web, "alice")["Location"].startswith("/account/mfa/verify/")
    assert web.get("/api/v1/requests/").status_code == 403
    assert web.post("/account/mfa/verify/", {"code": _code(device)}).status_code == 302
    assert web.get("/api/v1/requests/").status_code == 200


def test_removing_the_authenticator_needs_a_current_code_and_is_audited(people):
    web = Client()
    _sign_in(web, "alice")
    device = _enrol(web, people["alice"])
    assert web.post("/account/mfa/", {"code": "000000"}).status_code == 400
    assert TOTPDevice.objects.filter(user=people["alice"], confirmed=True).exists()
    assert web.post("/account/mfa/", {"code": _code(device)}).status_code == 302
    assert not TOTPDevice.objects.filter(user=people["alice"], confirmed=True).exists()
    assert AuditEvent.objects.filter(action="auth.mfa_removed", actor="alice", outcome="ok").exists()


def test_only_the_user_manages_their_own_authenticator(people):
    # given bob enrolled
    bob_web = Client()
    _sign_in(bob_web, "bob")
    _enrol(bob_web, people["bob"])
    # when the admin opens the MFA page, it is the admin's own (there is no page or API for anyone else's)
    admin_web = Client()
    admin_web.force_login(people["admin"])
    page = admin_web.get("/account/mfa/").content.decode()
    assert 'id="mfa-enrol"' in page
    assert TOTPDevice.objects.filter(user=people["bob"], confirmed=True).count() == 1


@pytest.mark.parametrize("old,new,field", [
    ("not it", "a long new password 42", "old_password"),
    (PASSWORD, "short", "new_password"),
    (PASSWORD, "password123456", "new_password"),
])
def test_a_bad_password_change_names_the_field_and_changes_nothing(people, web_for, old, new, field):
    answer = web_for("carol").post("/account/password/", {"old_password": old, "new_password": new})
    assert answer.status_code == 400 and f'id="id_{field}_error"' in answer.content.decode()
    people["carol"].refresh_from_db()
    assert people["carol"].check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="auth.password_changed").exists()


def test_a_user_changes_their_own_password_and_it_is_audited(people):
    web = Client()
    _sign_in(web, "carol")
    done = web.post("/account/password/", {"old_password": PASSWORD, "new_password": "a long new password 42"})
    assert done.status_code == 302
    assert web.get("/account/password/").status_code == 200  # this session stays
    assert AuditEvent.objects.filter(action="auth.password_changed", actor="carol", outcome="ok").exists()
    assert _sign_in(Client(), "carol", "a long new password 42").status_code == 302
    assert _sign_in(Client(), "carol").status_code == 200  # the old one is refused (the form again)
