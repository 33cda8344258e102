"""Foundation: sign-in for every persona, the API shell, instance registration, health."""

from __future__ import annotations

import logging

import psycopg
import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.models import Instance
from provisioning.clusters import free_port
from tests.fixtures.people import PASSWORD
from tests.support.assets import assert_only_own_assets

PERSONAS = ["admin", "alice", "dave", "bob", "carol"]


@pytest.mark.parametrize("username", PERSONAS)
def test_every_persona_gets_a_token_and_lists_teams(people, client, username):
    # given a demo persona / when they ask for a token with their password
    response = client.post("/api/v1/auth/token/", {"username": username, "password": PASSWORD},
                           content_type="application/json")
    # then they get a token that authenticates API calls
    assert response.status_code == 200
    token = response.json()["token"]
    teams = client.get("/api/v1/teams/", HTTP_AUTHORIZATION=f"Token {token}")
    assert teams.status_code == 200
    assert "results" in teams.json()
    assert AuditEvent.objects.filter(action="auth.login", actor=username).exists()


@pytest.mark.parametrize("username", PERSONAS)
def test_every_persona_signs_in_on_the_web(people, client, username):
    response = client.post(reverse("login"), {"username": username, "password": PASSWORD})
    assert response.status_code == 302
    home = client.get(reverse("home"), follow=True)  # an auditor's home redirects to the audit log
    assert home.status_code == 200
    assert username.encode() in home.content


def test_wrong_password_is_refused_and_audited(people, client):
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": "nope"},
                           content_type="application/json")
    assert response.status_code in (400, 401, 403)
    assert response.json()["detail"]
    event = AuditEvent.objects.filter(action="auth.login_failed", actor="alice").get()
    assert "nope" not in str(event.details)
    page = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert page.status_code == 200
    assert b"correct username and password" in page.content


@pytest.mark.parametrize("path", ["/api/v1/teams/", "/api/v1/instances/"])
def test_anonymous_api_calls_are_refused(db, client, path):
    response = client.get(path)
    assert response.status_code in (401, 403)
    assert set(response.json()) == {"detail", "errors"}


def test_anonymous_page_redirects_to_login(db, client):
    response = client.get(reverse("instance-list"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_developer_sees_only_own_teams(people, api_for):
    names = [t["name"] for t in api_for("alice").get("/api/v1/teams/").json()["results"]]
    assert names == ["payments"]
    assert len(api_for("bob").get("/api/v1/teams/").json()["results"]) == 2


def _register_body(cluster, **overrides):
    body = {"name": "ext1", "environment": "staging", "host": "127.0.0.1", "port": cluster.port,
            "database": "postgres", "admin_user": "postgres", "admin_password": cluster.admin_password}
    body.update(overrides)
    return body


def test_admin_registers_an_external_instance(people, api_for, managed_cluster):
    response = api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["server_version"].startswith("16")
    assert body["kind"] == "external" and body["status"] == "reachable"
    assert "admin_password" not in body and "admin_user" not in body
    stored = Instance.objects.get(name="ext1")
    assert managed_cluster.admin_password not in stored.admin_password_encrypted
    assert stored.admin_password == managed_cluster.admin_password
    assert AuditEvent.objects.filter(action="instance.registered", object_id=str(stored.pk)).exists()


def test_registration_against_the_machines_pg15(people, api_for, external_pg):
    body = {"name": "pg15", "environment": "dev", "host": "127.0.0.1", "port": 5432,
            "database": "postgres", "admin_user": "postgres", "admin_password": ""}
    response = api_for("admin").post("/api/v1/instances/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["server_version"].startswith("15")


def test_wrong_password_registration_is_a_400_and_stores_nothing(people, api_for, managed_cluster):
    response = api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster, admin_password="wrong"),
                                     format="json")
    assert response.status_code == 400
    assert "password authentication failed" in response.json()["detail"]
    assert not Instance.objects.filter(name="ext1").exists()


def test_unreachable_port_is_a_400(people, api_for, managed_cluster):
    response = api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster, port=free_port()),
                                     format="json")
    assert response.status_code == 400
    assert "refused" in response.json()["detail"]
    assert not Instance.objects.exists()


def test_host_outside_allowed_targets_is_refused_before_connecting(people, api_for, managed_cluster):
    # 192.0.2.1 is TEST-NET-1: never routed; refused by the allow-list before any packet.
    response = api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster, host="192.0.2.1"),
                                     format="json")
    assert response.status_code == 400
    assert "host" in response.json()["errors"]
    assert "PORTAL_ALLOWED_TARGETS" in response.json()["errors"]["host"][0]


def test_role_without_createrole_is_refused(people, api_for, managed_cluster):
    with psycopg.connect(managed_cluster.socket_conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS weakling")
        conn.execute("CREATE ROLE weakling LOGIN PASSWORD 'weak-password-1'")
    body = _register_body(managed_cluster, admin_user="weakling", admin_password="weak-password-1")
    response = api_for("admin").post("/api/v1/instances/", body, format="json")
    assert response.status_code == 400
    assert "admin_user" in response.json()["errors"]


@pytest.mark.parametrize("username", ["alice", "bob", "carol"])
def test_only_admins_register_instances(people, api_for, managed_cluster, username):
    response = api_for(username).post("/api/v1/instances/", _register_body(managed_cluster), format="json")
    assert response.status_code == 403


@pytest.mark.parametrize("field,value", [("port", 70000), ("port", "x"), ("environment", "moon"), ("name", "a b"),
                                         ("host", "not a host!")])
def test_bad_registration_input_names_the_field(people, api_for, managed_cluster, field, value):
    response = api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster, **{field: value}),
                                     format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_credentials_never_appear_in_api_pages_or_logs(people, api_for, web_for, managed_cluster, caplog):
    caplog.set_level(logging.DEBUG)
    secret = managed_cluster.admin_password
    api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster), format="json")
    api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster, name="ext2", admin_password="bad" + secret),
                          format="json")
    instance = Instance.objects.get(name="ext1")
    outputs = [
        api_for("admin").get("/api/v1/instances/").content,
        api_for("admin").get(f"/api/v1/instances/{instance.pk}/").content,
        web_for("admin").get(reverse("instance-list")).content,
        web_for("admin").get(reverse("instance-detail", args=[instance.pk])).content,
    ]
    form = web_for("admin").post(reverse("instance-register"), _register_body(managed_cluster, name="ext3"))
    outputs.append(form.content)
    for output in outputs:
        assert secret.encode() not in output
    assert secret not in caplog.text
    assert all(secret not in str(e.details) for e in AuditEvent.objects.all())


def test_admin_registers_through_the_form_and_sees_errors_inline(people, web_for, managed_cluster):
    client = web_for("admin")
    bad = client.post(reverse("instance-register"), _register_body(managed_cluster, admin_password="wrong"))
    assert bad.status_code == 400
    assert b"password authentication failed" in bad.content
    assert b'value="ext1"' in bad.content  # input kept on error
    good = client.post(reverse("instance-register"), _register_body(managed_cluster))
    assert good.status_code == 302
    assert Instance.objects.filter(name="ext1", kind="external").exists()


def test_out_of_scope_instance_detail_is_404(people, api_for):
    assert api_for("alice").get("/api/v1/instances/999999/").status_code == 404


def test_healthz_ok(db, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_metrics_exposed(db, client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests" in response.content


def test_openapi_document_and_docs_served(people, api_for):
    schema = api_for("alice").get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    docs = api_for("alice").get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    assert_only_own_assets(docs.content.decode())


@pytest.mark.parametrize("host", ["169.254.169.254", "fd00:ec2::254", "169.254.10.1", "metadata.google.internal",
                                  "0.0.0.0", "::ffff:169.254.169.254"])
def test_metadata_and_link_local_instance_hosts_are_refused_even_when_every_address_is_allowed(
        people, api_for, managed_cluster, settings, host):
    # given an operator who allowed every address
    settings.ALLOWED_TARGETS = ["0.0.0.0/0", "::/0", "metadata.google.internal"]
    # when an admin registers an instance at a cloud metadata or link-local address
    response = api_for("admin").post("/api/v1/instances/", _register_body(managed_cluster, host=host), format="json")
    # then it is refused on the host field before any connection, and nothing is stored
    assert response.status_code == 400
    assert "never connects" in response.json()["errors"]["host"][0]
    assert not Instance.objects.exists()
