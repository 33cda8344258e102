"""API tokens (#17): named, expiring, revocable, shown once, stored hashed; each use tied to the
user's current state; a user manages only their own, platform admins revoke anyone's."""

from __future__ import annotations

import hashlib
import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEvent
from portal.models import ApiToken
from tests.fixtures.people import PASSWORD


@pytest.fixture(autouse=True)
def _login_throttle_reset():
    """POST /api/v1/auth/token/ allows 30 a minute per address (LoginThrottle): these tests sign in
    often, from the same test client address, in the same Redis as the rest of the suite."""
    cache.delete("throttle_login_127.0.0.1")
    yield
    cache.delete("throttle_login_127.0.0.1")


def _client(key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _login_token(username: str) -> str:
    response = APIClient().post("/api/v1/auth/token/", {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def test_a_token_is_shown_once_and_only_its_digest_is_stored(people):
    # given alice signed in for a token (the demo's and scripts' way)
    first = _login_token("alice")
    # when she creates a named token
    created = _client(first).post("/api/v1/tokens/", {"name": "ci deploy", "expires_in_days": 7}, format="json")
    # then its text is in that answer, once, and the row keeps only the SHA-256 of it
    assert created.status_code == 201
    body = created.json()
    key = body["token"]
    assert key.startswith("dbp_") and len(key) > 40 and body["prefix"] == key[:12] and body["status"] == "active"
    row = ApiToken.objects.get(pk=body["id"])
    assert row.digest == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiToken.objects.filter(pk=row.pk).values().get())
    assert abs((row.expires_at - timezone.now()) - timedelta(days=7)) < timedelta(minutes=1)
    # and it is never shown again: the list and the detail have no token text
    listed = _client(key).get("/api/v1/tokens/").json()["results"]
    assert {t["name"] for t in listed} >= {"ci deploy"} and all("token" not in t for t in listed)
    assert "token" not in _client(key).get(f"/api/v1/tokens/{row.pk}/").json()
    # and no audit event holds it
    events = AuditEvent.objects.filter(action="token.created", actor="alice")
    assert events.count() == 2 and not any(key in str(e.details) or first in str(e.details) for e in events)
    assert {e.details["channel"] for e in events} == {"auth_endpoint", "tokens"}


def test_the_auth_endpoint_issues_named_tokens_that_work_for_each_persona(people):
    for username in ("admin", "alice", "bob", "carol"):
        key = _login_token(username)
        assert _client(key).get("/api/v1/teams/").status_code == 200
        token = ApiToken.objects.get(digest=hashlib.sha256(key.encode()).hexdigest())
        assert token.name.startswith("auth/token ") and token.user.username == username


def test_a_revoked_token_is_refused_at_once_and_the_refusal_is_audited(people):
    key = _login_token("dave")
    token = ApiToken.objects.get(user=people["dave"])
    assert _client(key).post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 200
    refused = _client(key).get("/api/v1/teams/")
    assert refused.status_code == 401 and refused.json()["detail"] == "Token revoked."
    assert AuditEvent.objects.filter(action="token.revoked", actor="dave", object_id=str(token.pk)).exists()
    denied = AuditEvent.objects.filter(action="access.denied").latest("seq")
    assert denied.details["status"] == 401 and denied.object_id == "/api/v1/teams/"
    # and revoking again is a conflict, not a second event
    again = _client(_login_token("dave")).post(f"/api/v1/tokens/{token.pk}/revoke/")
    assert again.status_code == 409


def test_an_expired_token_is_refused(people):
    key = _login_token("alice")
    ApiToken.objects.filter(user=people["alice"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = _client(key).get("/api/v1/teams/")
    assert refused.status_code == 401 and refused.json()["detail"] == "Token expired."


def test_each_use_follows_the_users_state_inactive_or_without_persona(people):
    alice_key, bob_key = _login_token("alice"), _login_token("bob")
    people["alice"].groups.clear()  # her persona taken away
    assert _client(alice_key).get("/api/v1/teams/").json()["detail"] == "User holds no persona."
    people["bob"].is_active = False
    people["bob"].save()
    assert _client(bob_key).get("/api/v1/teams/").status_code == 401


@override_settings(API_TOKEN_DAYS=5, API_TOKEN_MAX_DAYS=10)
def test_expiry_defaults_and_maximum_come_from_settings_and_bad_input_names_the_field(people):
    api = _client(_login_token("alice"))
    default = api.post("/api/v1/tokens/", {"name": "default"}, format="json").json()
    assert abs((ApiToken.objects.get(pk=default["id"]).expires_at - timezone.now()) - timedelta(days=5)) \
        < timedelta(minutes=1)
    for bad in (11, 0, -1, "soon", True):
        answer = api.post("/api/v1/tokens/", {"name": f"bad {bad}", "expires_in_days": bad}, format="json")
        assert answer.status_code == 400 and "expires_in_days" in answer.json()["errors"], (bad, answer.content)
    for name in ("", " ", "x" * 101, "tab\there"):
        answer = api.post("/api/v1/tokens/", {"name": name}, format="json")
        assert answer.status_code == 400 and "name" in answer.json()["errors"], name
    assert api.post("/api/v1/tokens/", {"name": "default"}, format="json").status_code == 409


def test_a_user_sees_and_revokes_only_their_own_tokens_and_an_admin_anyones(people):
    alice, dave, admin = (_client(_login_token(n)) for n in ("alice", "dave", "admin"))
    mine = alice.post("/api/v1/tokens/", {"name": "mine"}, format="json").json()["id"]
    assert {t["user"] for t in dave.get("/api/v1/tokens/").json()["results"]} == {"dave"}
    assert dave.get(f"/api/v1/tokens/{mine}/").status_code == 404
    assert dave.post(f"/api/v1/tokens/{mine}/revoke/").status_code == 404
    bob = _client(_login_token("bob"))  # a reviewer "sees everything" elsewhere, not tokens
    assert bob.post(f"/api/v1/tokens/{mine}/revoke/").status_code == 404
    assert {t["user"] for t in admin.get("/api/v1/tokens/?user=alice").json()["results"]} == {"alice"}
    assert admin.post(f"/api/v1/tokens/{mine}/revoke/").json()["status"] == "revoked"
    assert AuditEvent.objects.get(action="token.revoked", object_id=str(mine)).actor == "admin"
    # nobody creates a token for someone else: the input has no user field, the token is the caller's
    made = admin.post("/api/v1/tokens/", {"name": "for alice?", "user": "alice"}, format="json").json()
    assert made["user"] == "admin"


def test_last_used_is_written_at_most_once_a_minute(people):
    key = _login_token("alice")
    token = ApiToken.objects.get(user=people["alice"])
    assert token.last_used_at is None
    _client(key).get("/api/v1/teams/")
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    _client(key).get("/api/v1/teams/")
    token.refresh_from_db()
    assert token.last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    _client(key).get("/api/v1/teams/")
    token.refresh_from_db()
    assert token.last_used_at > first - timedelta(minutes=1)


def test_the_token_list_costs_a_fixed_number_of_queries(people, django_assert_max_num_queries):
    key = _login_token("admin")
    api = _client(key)
    for index in range(30):
        api.post("/api/v1/tokens/", {"name": f"t{index}"}, format="json")
    api.get("/api/v1/tokens/")  # last_used written
    # the token and groups (1), count and page (2)
    with django_assert_max_num_queries(3):
        answer = api.get("/api/v1/tokens/")
    assert answer.json()["count"] == 31


def test_the_tokens_page_shows_a_new_token_once_and_lists_own_tokens(people, web_for, django_assert_max_num_queries):
    web = web_for("alice")
    created = web.post("/account/tokens/", {"name": "laptop"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=people["alice"], name="laptop")
    page = created.content.decode()
    key = page.split('id="token-value" value="')[1].split('"')[0]
    assert hashlib.sha256(key.encode()).hexdigest() == token.digest
    for index in range(20):
        web.post("/account/tokens/", {"name": f"t{index}"})
    with django_assert_max_num_queries(8):
        again = web.get("/account/tokens/").content.decode()
    assert "laptop" in again and key not in again
    assert web.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_old_drf_tokens_become_hashed_named_tokens_that_keep_working(people):
    migration = importlib.import_module("portal.migrations.0008_identity_tokens")
    old = Token.objects.create(user=people["carol"])
    migration.tokens_forward(apps, None)
    assert not Token.objects.exists()
    moved = ApiToken.objects.get(user=people["carol"])
    assert moved.digest == hashlib.sha256(old.key.encode()).hexdigest() and moved.prefix == old.key[:8]
    assert _client(old.key).get("/api/v1/teams/").status_code == 200


@pytest.mark.parametrize("header", ["Token " + "a" * 300, "Token dbp_\u00e9", "Token x\x00y"])
def test_a_malformed_token_is_a_401_never_a_500(people, header):
    answer = APIClient().get("/api/v1/teams/", HTTP_AUTHORIZATION=header)
    assert answer.status_code in (400, 401)


def test_the_users_list_page_and_api_cost_a_fixed_number_of_queries(people, api_for, web_for,
                                                                     django_assert_max_num_queries):
    from django.contrib.auth.models import User

    User.objects.bulk_create([User(username=f"u{index}") for index in range(40)])
    api, web = api_for("admin"), web_for("admin")
    # the token and groups (1), count and page (2)
    with django_assert_max_num_queries(3):
        assert api.get("/api/v1/users/").json()["count"] == 45
    # session, user, groups, the list, and the page frame's reads (navigation counts): not per user
    with django_assert_max_num_queries(9):
        assert web.get("/users/").status_code == 200
