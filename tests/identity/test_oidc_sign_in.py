"""Single sign-on against a real OpenID Connect provider (panva/oidc-provider under Node, own process).

Django's test client is the browser at the portal; a requests session is the browser at the
provider (its own login form). Nothing of the protocol is mocked: discovery, the authorization
code with PKCE, the ID token's signature, nonce and state are the provider's and Authlib's.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from portal.choices import MembershipRole, Persona
from portal.models import GroupMapping, IdentityLink, Membership, Team
from portal.personas import user_groups
from portal.services import oidc
from tests.identity.conftest import TEST_CALLBACK
from tests.identity.provider_process import provider_login, query_of, with_params

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def start(client, next_path: str = "") -> str:
    response = client.get("/login/oidc/" + (f"?next={next_path}" if next_path else ""))
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def sign_in(client, provider, username: str, **kwargs):
    """The whole journey: portal → provider login form → portal callback. Returns the callback's answer."""
    callback = provider_login(start(client, **kwargs), username, stop_at=TEST_CALLBACK)
    return client.get(callback.removeprefix("http://testserver"))


def events(action: str, **filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("seq"))


@pytest.fixture
def mapped(people):
    """payments members, payments leads, reviewers and auditors mapped; analytics untouched."""
    payments = Team.objects.get(name="payments")
    GroupMapping.objects.create(group="db-payments", team=payments, team_role=MembershipRole.MEMBER)
    GroupMapping.objects.create(group="db-payments-leads", team=payments, team_role=MembershipRole.LEAD)
    GroupMapping.objects.create(group="db-developers", persona=Persona.REQUESTERS)
    GroupMapping.objects.create(group="db-reviewers", persona=Persona.REVIEWERS)
    return payments


def test_code_flow_with_pkce_signs_in_a_new_user_into_the_mapped_team_and_persona(client, oidc_provider, mapped):
    # given erin, in two mapped groups at the provider and unknown to the portal
    oidc_provider.set_users({"erin": {"email": "erin@corp.test", "groups": ["db-payments", "db-developers",
                                                                            "unmapped"]}})
    # when she signs in through the provider's own login form
    authorize = start(client, next_path="/requests/")
    params = query_of(authorize)
    assert params["code_challenge_method"] == "S256" and params["code_challenge"]
    assert params["nonce"] and params["state"] and params["response_type"] == "code"
    callback = provider_login(authorize, "erin", stop_at=TEST_CALLBACK)
    response = client.get(callback.removeprefix("http://testserver"))
    # then she is signed in, created, linked by subject, in the team with the persona
    assert response.status_code == 302 and response["Location"] == "/requests/"
    erin = User.objects.get(username="erin")
    assert client.session["_auth_user_id"] == str(erin.pk)
    assert not erin.has_usable_password() and erin.email == "erin@corp.test"
    link = IdentityLink.objects.get(user=erin)
    assert link.issuer == oidc_provider.issuer and link.subject == "erin"
    assert "unmapped" in link.groups
    assert Membership.objects.get(user=erin, team=mapped).role == MembershipRole.MEMBER
    assert user_groups(erin) == {Persona.REQUESTERS.value}
    # and every step is in the audit log
    assert events("identity.user_created", object_id=str(erin.pk))[0].outcome == "created"
    added = events("team.member_added", object_id=str(mapped.pk))[-1]
    assert added.actor == "system" and added.details["user"] == "erin" and added.details["via"] == "oidc"
    assert events("identity.persona_added")[-1].details["persona"] == "requesters"
    login = events("auth.login", actor="erin")[-1]
    assert login.outcome == "ok" and login.details["channel"] == "oidc"
    assert login.details["mapped_groups"] == ["db-developers", "db-payments"]
    # and the home page knows her
    assert client.get("/").status_code == 200


def test_mapping_is_applied_again_at_every_sign_in_lead_persona_added_and_removed(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments", "db-developers"]}})
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    erin = User.objects.get(username="erin")
    analytics = Team.objects.get(name="analytics")
    Membership.objects.create(user=erin, team=analytics)  # by hand: no mapping names analytics
    client.logout()
    # the provider now lists her as a payments lead and a reviewer, no longer a developer
    oidc_provider.set_groups("erin", ["db-payments", "db-payments-leads", "db-reviewers"])
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    assert Membership.objects.get(user=erin, team=mapped).role == MembershipRole.LEAD
    assert erin.has_perm("portal.lead_team", mapped)
    assert set(erin.groups.values_list("name", flat=True)) == {"reviewers"}
    assert Membership.objects.filter(user=erin, team=analytics).exists()  # left alone
    changed = events("team.member_changed", object_id=str(mapped.pk))[-1]
    assert changed.details["role"] == "lead" and changed.details["previous_role"] == "member"
    assert events("identity.persona_removed")[-1].details["persona"] == "requesters"
    assert events("identity.persona_added")[-1].details["persona"] == "reviewers"
    client.logout()
    # leads no more, and out of payments entirely: removed, and the lead permission with it
    oidc_provider.set_groups("erin", ["db-reviewers"])
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    assert not Membership.objects.filter(user=erin, team=mapped).exists()
    erin = User.objects.get(pk=erin.pk)
    assert not erin.has_perm("portal.lead_team", mapped)
    removed = events("team.member_removed", object_id=str(mapped.pk))[-1]
    assert removed.outcome == "removed" and removed.details["role"] == "lead" and removed.actor == "system"


def test_a_user_in_no_mapped_group_is_refused_and_not_created(client, oidc_provider, mapped):
    oidc_provider.set_users({"mallory": {"groups": ["everyone"]}})
    response = sign_in(client, oidc_provider, "mallory")
    assert response.status_code == 403
    assert b"not in any group mapped to the portal" in response.content
    assert not User.objects.filter(username="mallory").exists()
    assert "_auth_user_id" not in client.session
    refused = events("auth.login_failed", actor="mallory")[-1]
    assert refused.outcome == "refused" and refused.details["channel"] == "oidc"
    assert not events("access.denied")  # one refusal, one event


def test_a_user_the_provider_drops_from_every_mapped_group_is_deactivated_and_offboarded(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    client.logout()
    oidc_provider.set_groups("erin", [])
    response = sign_in(client, oidc_provider, "erin")
    assert response.status_code == 403
    assert b"no longer lists the user in any mapped group" in response.content
    erin = User.objects.get(username="erin")
    assert not erin.is_active
    assert "_auth_user_id" not in client.session
    assert events("user.deactivated", object_id=str(erin.pk))[-1].actor == "system"
    assert events("user.offboarded", object_id=str(erin.pk))[-1].outcome == "offboarded"
    # back in a group later: still refused until an admin reactivates the account
    oidc_provider.set_groups("erin", ["db-payments"])
    response = sign_in(client, oidc_provider, "erin")
    assert response.status_code == 403 and b"deactivated" in response.content


def test_a_provider_name_that_is_a_local_account_is_never_taken_over(client, oidc_provider, mapped, people):
    oidc_provider.set_users({"admin": {"groups": ["db-payments"]}})
    response = sign_in(client, oidc_provider, "admin")
    assert response.status_code == 403 and b"belongs to another account" in response.content
    assert not IdentityLink.objects.exists()
    assert "_auth_user_id" not in client.session


def test_state_mismatch_is_refused(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    callback = provider_login(start(client), "erin", stop_at=TEST_CALLBACK)
    forged = with_params(callback, state="not-the-state-this-browser-started")
    response = client.get(forged.removeprefix("http://testserver"))
    assert response.status_code == 400
    assert b"state mismatch" in response.content
    assert not User.objects.filter(username="erin").exists()
    failed = events("auth.login_failed", actor="anonymous")[-1]
    assert failed.outcome == "failed" and "state mismatch" in failed.details["reason"]
    # a callback without any sign-in started is refused the same way
    assert client.get("/login/oidc/callback/?code=x&state=y").status_code == 400


def test_an_id_token_with_another_sign_ins_nonce_is_refused(client, oidc_provider, mapped):
    """Code injection: an attacker's code (its nonce) delivered into the victim's sign-in, with the
    victim's state and PKCE challenge, so that only the nonce can tell."""
    from django.test import Client

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    victim = Client()
    attacker_authorize, victim_authorize = start(client), start(victim)
    victim_params = query_of(victim_authorize)
    crafted = with_params(attacker_authorize, state=victim_params["state"],
                          code_challenge=victim_params["code_challenge"])
    assert query_of(crafted)["nonce"] != victim_params["nonce"]
    callback = provider_login(crafted, "erin", stop_at=TEST_CALLBACK)
    response = victim.get(callback.removeprefix("http://testserver"))
    assert response.status_code == 400
    assert b"nonce" in response.content
    assert "_auth_user_id" not in victim.session
    assert "nonce" in events("auth.login_failed", actor="anonymous")[-1].details["reason"]


def test_a_code_redeemed_without_its_pkce_verifier_is_refused_by_the_provider(client, oidc_provider, mapped):
    from django.test import Client

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    victim = Client()
    attacker_authorize, victim_authorize = start(client), start(victim)
    victim_params = query_of(victim_authorize)
    crafted = with_params(attacker_authorize, state=victim_params["state"])  # the attacker's challenge
    callback = provider_login(crafted, "erin", stop_at=TEST_CALLBACK)
    response = victim.get(callback.removeprefix("http://testserver"))
    assert response.status_code == 400 and b"invalid_grant" in response.content
    assert "_auth_user_id" not in victim.session


def test_a_replayed_callback_is_refused(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    callback = provider_login(start(client), "erin", stop_at=TEST_CALLBACK)
    assert client.get(callback.removeprefix("http://testserver")).status_code == 302
    client.logout()
    assert client.get(callback.removeprefix("http://testserver")).status_code == 400  # state used up


def test_signing_key_rotation_is_followed_by_fetching_the_jwks_again(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    old_kid = oidc_provider.kid
    cached = oidc._client().server_metadata["jwks"]
    assert [k["kid"] for k in cached["keys"]] == [old_kid]
    client.logout()
    # the provider rotates: a new key, the old one gone; the portal still holds the old JWKS
    oidc_provider.rotate_keys()
    assert oidc_provider.kid != old_kid
    response = sign_in(client, oidc_provider, "erin")
    assert response.status_code == 302, response.content[:300]
    assert [k["kid"] for k in oidc._client().server_metadata["jwks"]["keys"]] == [oidc_provider.kid]


def test_provider_down_shows_a_clear_page_not_a_500(client, oidc_provider, mapped):
    oidc_provider.stop()
    response = client.get("/login/oidc/")
    assert response.status_code == 503
    assert b"cannot be reached" in response.content and b"Back to sign in" in response.content
    failed = events("auth.login_failed", actor="anonymous")[-1]
    assert failed.outcome == "failed" and "discovery failed" in failed.details["reason"]


def test_provider_down_between_the_redirect_and_the_callback(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    callback = provider_login(start(client), "erin", stop_at=TEST_CALLBACK)
    oidc_provider.stop()
    response = client.get(callback.removeprefix("http://testserver"))
    assert response.status_code == 503 and b"cannot be reached" in response.content
    assert "_auth_user_id" not in client.session


def test_an_error_sent_back_by_the_provider_is_a_clear_page(client, oidc_provider, mapped):
    authorize = start(client)
    state = query_of(authorize)["state"]
    response = client.get(f"/login/oidc/callback/?error=access_denied&state={state}")
    assert response.status_code == 400 and b"access_denied" in response.content


def test_login_page_offers_the_provider_and_the_break_glass_form(client, oidc_provider):
    page = client.get("/login/").content.decode()
    assert "Sign in with Test IdP" in page and 'name="password"' in page


def test_the_group_map_file_bootstraps_an_empty_table_at_the_first_sign_in(client, oidc_provider, people, tmp_path,
                                                                           settings):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"mappings": [{"group": "db-analytics", "team": "analytics", "role": "lead"},
                                             {"group": "db-audit", "persona": "auditors"}]}))
    settings.OIDC_GROUP_MAP = path
    oidc_provider.set_users({"olga": {"groups": ["db-analytics", "db-audit"]}})
    assert sign_in(client, oidc_provider, "olga").status_code == 302
    olga = User.objects.get(username="olga")
    assert Membership.objects.get(user=olga, team__name="analytics").role == "lead"
    assert user_groups(olga) == {"auditors"}
    created = events("identity.mapping_created")
    assert len(created) == 2 and created[0].actor == "system" and created[0].details["source"] == str(path)


def test_provider_unreachable_at_a_dead_port_is_503(client, settings):
    # nothing listens on this loopback port: connection refused, at once
    settings.OIDC_ISSUER = "http://127.0.0.1:9"
    settings.OIDC_CLIENT_ID = "x"
    settings.OIDC_CLIENT_SECRET = "y"
    response = client.get("/login/oidc/")
    assert response.status_code == 503


def test_sso_pages_are_404_without_an_issuer(client, settings):
    settings.OIDC_ISSUER = None
    assert client.get("/login/oidc/").status_code == 404
    assert client.get("/login/oidc/callback/?code=a&state=b").status_code == 404
    assert "Sign in with" not in client.get("/login/").content.decode()



# --- the periodic check: the provider asked about users who do not sign in ----------------------

@pytest.fixture
def checking(settings):
    settings.OIDC_CHECK_MINUTES = 15


def test_the_periodic_check_applies_group_changes_and_offboards_a_user_dropped_at_the_provider(
        client, oidc_provider, mapped, checking):
    from portal.services.identity import identity_check

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    assert "offline_access" in query_of(start(client))["scope"].split()
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    erin = User.objects.get(username="erin")
    link = IdentityLink.objects.get(user=erin)
    assert link.refresh_token_encrypted and "erin" not in link.refresh_token_encrypted  # encrypted at rest
    # the provider makes her a lead: the check applies it without her signing in
    oidc_provider.set_groups("erin", ["db-payments-leads"])
    assert identity_check() == {"checked": 0, "changed": 1, "offboarded": 0, "failed": 0}
    assert Membership.objects.get(user=erin, team=mapped).role == MembershipRole.LEAD
    assert events("team.member_changed")[-1].details["via"] == "oidc-check"
    # nothing new: nothing recorded
    before = AuditEvent.objects.count()
    assert identity_check()["checked"] == 1 and AuditEvent.objects.count() == before
    # dropped from every mapped group: offboarded by the portal, her session no longer works
    oidc_provider.set_groups("erin", ["all-staff"])
    assert identity_check()["offboarded"] == 1
    erin.refresh_from_db()
    assert not erin.is_active
    assert "periodic check" in events("user.offboarded", object_id=str(erin.pk))[-1].details["reason"]
    assert client.get("/").status_code == 302  # signed out: an inactive user's session ends


def test_the_periodic_check_offboards_a_user_deleted_at_the_provider(client, oidc_provider, mapped, checking):
    from portal.services.identity import identity_check

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    oidc_provider.set_users({})  # deleted at the provider: it refuses her refresh token
    assert identity_check()["offboarded"] == 1
    erin = User.objects.get(username="erin")
    assert not erin.is_active
    assert "invalid_grant" in events("user.offboarded", object_id=str(erin.pk))[-1].details["reason"]


def test_the_periodic_check_changes_nothing_while_the_provider_is_down(client, oidc_provider, mapped, checking):
    from portal.services.identity import identity_check

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    oidc_provider.stop()
    assert identity_check()["unavailable"] == 1
    assert User.objects.get(username="erin").is_active
    assert events("identity.check_failed")[-1].outcome == "failed"


def test_the_periodic_check_is_off_by_default(client, oidc_provider, mapped):
    from portal.services.identity import identity_check

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    assert "offline_access" not in query_of(start(client))["scope"].split()
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    assert IdentityLink.objects.get(subject="erin").refresh_token_encrypted == ""
    oidc_provider.set_groups("erin", [])
    assert identity_check() == {"checked": 0, "changed": 0, "offboarded": 0, "failed": 0}
    assert User.objects.get(username="erin").is_active


def test_a_name_reused_at_the_provider_for_another_subject_does_not_open_the_first_account(
        client, oidc_provider, mapped):
    from django.test import Client

    oidc_provider.set_users({"erin": {"groups": ["db-payments"]},
                             "erin-2": {"preferred_username": "erin", "groups": ["db-payments"]}})
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    other = Client()
    response = sign_in(other, oidc_provider, "erin-2")
    assert response.status_code == 403 and b"belongs to another account" in response.content
    assert "_auth_user_id" not in other.session
    assert list(IdentityLink.objects.values_list("subject", flat=True)) == ["erin"]


def test_clock_skew_within_the_leeway_is_accepted_beyond_it_refused(client, oidc_provider, mapped, settings):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    oidc_provider.clock_skew_seconds = 30  # the provider's clock is 30 s ahead: its tokens are issued "in the future"
    oidc_provider.restart()
    settings.OIDC_LEEWAY_SECONDS = 60
    assert sign_in(client, oidc_provider, "erin").status_code == 302
    client.logout()
    settings.OIDC_LEEWAY_SECONDS = 5
    response = sign_in(client, oidc_provider, "erin")
    assert response.status_code == 400 and b"issued in the future" in response.content
    assert "_auth_user_id" not in client.session


def test_an_expired_id_token_is_refused(client, oidc_provider, mapped):
    oidc_provider.set_users({"erin": {"groups": ["db-payments"]}})
    # five minutes behind, two-minute ID tokens: they arrive expired for three minutes, beyond the leeway
    oidc_provider.clock_skew_seconds, oidc_provider.id_token_ttl = -300, 120
    oidc_provider.restart()
    response = sign_in(client, oidc_provider, "erin")
    assert response.status_code == 400 and b"ID token refused" in response.content and b"exp" in response.content
    assert not User.objects.filter(username="erin").exists()
