"""Host headers, /metrics and API caching (#14, item 9).

- ALLOWED_HOSTS follows PORTAL_BASE_URL, so a forged Host header is refused rather than echoed
  into pagination links;
- /metrics answers a bearer token or an allowed client address only;
- API answers carry Cache-Control: no-store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from tests.support.deployment import production_env

ROOT = Path(__file__).resolve().parents[2]


def settings_of(env: dict[str, str], *names: str) -> dict:
    """Settings as a deployment with `env` loads them (own process: they are read at import)."""
    script = f"import json; from django.conf import settings; print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {script}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def base_url_env(tmp_path) -> dict[str, str]:
    """A deployment that sets PORTAL_BASE_URL and not PORTAL_ALLOWED_HOSTS."""
    env = production_env(tmp_path)
    env.pop("PORTAL_ALLOWED_HOSTS")
    env["PORTAL_BASE_URL"] = "https://dbportal.example.test/"
    return env


# --- Host header ------------------------------------------------------------------------------

def test_allowed_hosts_follow_the_base_url_plus_loopback(base_url_env):
    assert settings_of(base_url_env, "ALLOWED_HOSTS") == {
        "ALLOWED_HOSTS": ["dbportal.example.test", "localhost", "127.0.0.1", "[::1]"]}


def test_an_explicit_allowed_hosts_list_wins_and_nothing_set_allows_any(base_url_env):
    assert settings_of({**base_url_env, "PORTAL_ALLOWED_HOSTS": "a.example.test,b.example.test"},
                       "ALLOWED_HOSTS") == {"ALLOWED_HOSTS": ["a.example.test", "b.example.test"]}
    without = {k: v for k, v in base_url_env.items() if k != "PORTAL_BASE_URL"}
    assert settings_of(without, "ALLOWED_HOSTS") == {"ALLOWED_HOSTS": ["*"]}


def test_a_forged_host_header_is_refused_not_echoed_in_pagination_links(people, api_for, base_url_env):
    allowed = settings_of(base_url_env, "ALLOWED_HOSTS")["ALLOWED_HOSTS"]
    client = api_for("admin")
    with override_settings(ALLOWED_HOSTS=allowed):
        # given a list with a next page, when it is asked for under a forged Host
        forged = client.get("/api/v1/teams/", {"page_size": 1}, HTTP_HOST="evil.example.test")
        # then it is a 400 that does not repeat the forged name in any link
        assert forged.status_code == 400
        assert b"https://evil.example.test" not in forged.content and b"http://evil" not in forged.content
        # and under the portal's own name the next link is the portal's
        real = client.get("/api/v1/teams/", {"page_size": 1}, HTTP_HOST="dbportal.example.test")
        assert real.status_code == 200
        assert real.json()["next"].startswith("http://dbportal.example.test/api/v1/teams/")
        # and loopback still answers (make run's health check asks http://127.0.0.1:PORT/healthz)
        assert client.get("/api/v1/teams/", HTTP_HOST="127.0.0.1:8000").status_code == 200


# --- /metrics ----------------------------------------------------------------------------------

def test_metrics_refuse_a_client_outside_the_allowed_addresses(db, client):
    # given a scraper from a public address and no token
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    # then nothing is shown
    assert response.status_code == 403
    assert b"django_http_requests" not in response.content


def test_metrics_answer_loopback_by_default(db, client):
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        response = client.get("/metrics", REMOTE_ADDR=address)
        assert response.status_code == 200, address
        assert b"django_http_requests" in response.content


def test_metrics_answer_the_bearer_token_from_anywhere_and_nothing_else(db, client, settings):
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    ok = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789")
    assert ok.status_code == 200
    for header in ("Bearer wrong-token", "Token scrape-token-0123456789", "Bearer ", ""):
        assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=header).status_code == 403


def test_metrics_allowed_addresses_are_configurable(db, client, settings):
    settings.METRICS_ALLOWED = ["10.20.0.0/16"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_no_token_configured_means_no_token_accepted(db, client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer ").status_code == 403


# --- Cache-Control ----------------------------------------------------------------------------

@pytest.mark.parametrize(("who", "method", "path", "status"), [
    ("admin", "get", "/api/v1/teams/", 200),
    (None, "get", "/api/v1/teams/", 401),
    ("admin", "get", "/api/v1/requests/999999/", 404),
    ("admin", "get", "/api/v1/teams/?q=a%00b", 400),
    ("carol", "get", "/api/v1/audit/verify/", 200),
    (None, "get", "/api/v1/schema/", 200),
    ("carol", "get", "/api/v1/audit/export/?format=csv", 200),  # streamed
])
def test_api_answers_carry_no_store(people, api_for, who, method, path, status):
    response = getattr(api_for(who), method)(path)
    assert response.status_code == status
    assert "no-store" in response["Cache-Control"]


def test_the_token_answer_is_not_cached(people, api_for):
    from tests.fixtures.people import PASSWORD

    response = api_for(None).post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
