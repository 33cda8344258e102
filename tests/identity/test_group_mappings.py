"""Group mappings: platform admins only (page and API), every field checked, every change audited;
the bootstrap file validated entry by entry; password sign-in switched off."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from portal.models import GroupMapping, Team
from tests.fixtures.people import PASSWORD

pytestmark = pytest.mark.django_db
API = "/api/v1/identity/group-mappings/"


def last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-seq").first()


@pytest.mark.parametrize("username", [None, "alice", "dave", "bob", "carol"])
def test_only_platform_admins_read_or_change_mappings_over_the_api(api_for, username):
    mapping = GroupMapping.objects.create(group="g", persona="auditors")
    client = api_for(username)
    expected = 401 if username is None else 403
    assert client.get(API).status_code == expected
    assert client.post(API, {"group": "x", "persona": "platform-admins"}, format="json").status_code == expected
    assert client.put(f"{API}{mapping.pk}/", {"group": "x", "persona": "platform-admins"},
                      format="json").status_code == expected
    assert client.delete(f"{API}{mapping.pk}/").status_code == expected
    assert list(GroupMapping.objects.values_list("group", "persona")) == [("g", "auditors")]
    assert not AuditEvent.objects.filter(action__startswith="identity.").exists()


@pytest.mark.parametrize("username", ["alice", "bob", "carol"])
def test_only_platform_admins_open_the_mapping_page(web_for, username):
    client = web_for(username)
    assert client.get("/identity/group-mappings/").status_code == 403
    assert client.post("/identity/group-mappings/", {"group": "x", "persona": "platform-admins"}).status_code == 403
    assert not GroupMapping.objects.exists()


def test_admin_creates_changes_and_deletes_a_mapping_over_the_api_each_audited(api_for, django_assert_max_num_queries):
    admin = api_for("admin")
    created = admin.post(API, {"group": "db-payments", "team": "payments", "role": "lead"}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["group"] == "db-payments" and body["team"] == "payments" and body["role"] == "lead"
    assert body["persona"] is None
    event = last("identity.mapping_created")
    assert event.actor == "admin" and event.outcome == "created"
    assert event.details == {"group": "db-payments", "team": "payments", "role": "lead", "persona": None}
    pk = body["id"]
    changed = admin.put(f"{API}{pk}/", {"group": "db-payments", "persona": "reviewers"}, format="json")
    assert changed.status_code == 200 and changed.json()["team"] is None
    event = last("identity.mapping_changed")
    assert event.details["before"]["team"] == "payments" and event.details["after"]["persona"] == "reviewers"
    for index in range(5):
        GroupMapping.objects.create(group=f"g{index}", persona="auditors")
    with django_assert_max_num_queries(6):
        listed = admin.get(API)
    assert listed.status_code == 200 and len(listed.json()["results"]) == 6
    assert admin.delete(f"{API}{pk}/").status_code == 204
    assert last("identity.mapping_deleted").details["persona"] == "reviewers"
    assert not GroupMapping.objects.filter(pk=pk).exists()


@pytest.mark.parametrize(("payload", "field"), [
    ({"group": "", "persona": "auditors"}, "group"),
    ({"group": "x" * 201, "persona": "auditors"}, "group"),
    ({"group": "a\x01b", "persona": "auditors"}, "group"),
    ({"group": "g"}, "team"),
    ({"group": "g", "team": "payments", "persona": "auditors"}, "team"),
    ({"group": "g", "team": "no-such-team"}, "team"),
    ({"group": "g", "team": "payments", "role": "owner"}, "role"),
    ({"group": "g", "persona": "superusers"}, "persona"),
    ({"group": "g", "persona": "auditors", "role": "lead"}, "role"),
    ({"group": ["g"], "persona": "auditors"}, "group"),
])
def test_bad_mappings_are_a_400_naming_the_field_and_change_nothing(api_for, payload, field):
    response = api_for("admin").post(API, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not GroupMapping.objects.exists()


def test_the_same_mapping_twice_is_refused(api_for):
    admin = api_for("admin")
    assert admin.post(API, {"group": "g", "persona": "auditors"}, format="json").status_code == 201
    again = admin.post(API, {"group": "g", "persona": "auditors"}, format="json")
    assert again.status_code == 400 and "group" in again.json()["errors"]


def test_admin_maps_a_group_on_the_page(web_for):
    client = web_for("admin")
    page = client.get("/identity/group-mappings/")
    assert page.status_code == 200 and b"No group is mapped yet" in page.content
    response = client.post("/identity/group-mappings/", {"group": "db-analytics", "team": "analytics",
                                                         "team_role": "member", "persona": ""})
    assert response.status_code == 302
    mapping = GroupMapping.objects.get(group="db-analytics")
    assert mapping.team == Team.objects.get(name="analytics")
    assert last("identity.mapping_created").actor == "admin"
    # both a team and a persona: the form comes back with the reason, nothing saved
    bad = client.post("/identity/group-mappings/", {"group": "x", "team": "analytics", "team_role": "",
                                                    "persona": "auditors"})
    assert bad.status_code == 400 and b"exactly one" in bad.content
    edit = client.post(f"/identity/group-mappings/{mapping.pk}/", {"group": "db-analytics", "team": "analytics",
                                                                  "team_role": "lead", "persona": ""})
    assert edit.status_code == 302
    assert last("identity.mapping_changed").details["after"]["role"] == "lead"
    assert client.post(f"/identity/group-mappings/{mapping.pk}/delete/").status_code == 302
    assert last("identity.mapping_deleted").details["group"] == "db-analytics"


def test_the_group_map_file_is_checked_entry_by_entry(people, tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps([{"group": "ok", "persona": "auditors"},
                                {"group": "db-x", "team": "no-such-team"}]))
    with pytest.raises(CommandError, match=r"entry 2 \(group 'db-x'\): team: no team named 'no-such-team'"):
        call_command("identity_group_map", file=path)
    assert not GroupMapping.objects.exists()  # all or nothing
    path.write_text("{not json")
    with pytest.raises(CommandError, match="is not JSON"):
        call_command("identity_group_map", file=path, check=True)
    path.write_text(json.dumps({"mappings": [{"group": "a", "persona": "auditors", "colour": "red"}]}))
    with pytest.raises(CommandError, match="entry 1 .*unknown keys colour"):
        call_command("identity_group_map", file=path)
    path.write_text(json.dumps({"mappings": [{"group": "a", "persona": "auditors"},
                                             {"group": "a", "persona": "auditors"}]}))
    with pytest.raises(CommandError, match="entry 2 .*listed twice"):
        call_command("identity_group_map", file=path)
    path.write_text(json.dumps({"mappings": [{"group": "a", "persona": "auditors"},
                                             {"group": "b", "team": "payments"}]}))
    call_command("identity_group_map", file=path)
    assert GroupMapping.objects.count() == 2
    assert GroupMapping.objects.get(group="b").team_role == "member"
    # once the table has rows the file no longer loads: the admins' edits win
    GroupMapping.objects.filter(group="a").delete()
    call_command("identity_group_map", file=path)
    assert GroupMapping.objects.count() == 1


def test_local_login_off_refuses_passwords_on_the_page_and_the_api(client, people, settings):
    settings.LOCAL_LOGIN = False
    settings.OIDC_ISSUER = "http://127.0.0.1:9"
    settings.OIDC_NAME = "Corp SSO"
    page = client.get("/login/").content.decode()
    assert "Sign in with Corp SSO" in page and 'name="password"' not in page
    response = client.post("/login/", {"username": "admin", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert b"password sign-in is switched off" in response.content
    event = last("auth.login_failed")
    assert event.actor == "admin" and event.outcome == "refused" and event.details["channel"] == "web"
    api = client.post("/api/v1/auth/token/", {"username": "admin", "password": PASSWORD},
                      content_type="application/json")
    assert api.status_code == 403 and "switched off" in api.json()["detail"]
    assert last("auth.login_failed").details == {"channel": "api", "reason": "local sign-in is switched off"}
    assert not AuditEvent.objects.filter(action="auth.login").exists()
    assert not AuditEvent.objects.filter(action="access.denied").exists()  # one refusal, one event


def test_local_login_on_by_default_keeps_the_password_form(client, people):
    assert 'name="password"' in client.get("/login/").content.decode()
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302


def test_key_rotation_re_encrypts_the_stored_refresh_tokens(people, settings):
    from cryptography.fernet import Fernet

    from portal.crypto import decrypt, encrypt
    from portal.models import IdentityLink

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FERNET_KEYS = [old]
    link = IdentityLink.objects.create(user=people["dave"], issuer="https://idp.test", subject="dave",
                                       refresh_token_encrypted=encrypt("refresh-token-of-dave"))
    settings.FERNET_KEYS = [new, old]
    call_command("rotate_fernet_keys")
    settings.FERNET_KEYS = [new]  # the old key retired: the token still decrypts
    link.refresh_from_db()
    assert decrypt(link.refresh_token_encrypted) == "refresh-token-of-dave"
