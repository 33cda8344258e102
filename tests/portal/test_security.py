"""Security settings: deploy checks, CSP, cookies, login throttling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.urls import reverse

from tests.fixtures.people import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; a deployment never has it.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.base", PORTAL_VAR_DIR=str(tmp_path), PORTAL_ENVIRONMENT="prod",
        PORTAL_SECRET_KEY="k" * 10 + "-production-secret-key-with-enough-entropy-0123456789",
        PORTAL_ALLOWED_HOSTS="portal.example.com", DATABASE_URL="postgresql://portal@127.0.0.1/portal",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout or "0 issues" in result.stdout or "1 silenced" in result.stdout


def test_pages_carry_a_csp_without_inline_script(db, client):
    response = client.get(reverse("login"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert b"<script>" not in response.content  # every script is a file
    assert response["X-Frame-Options"] == "DENY"


def test_session_cookie_is_httponly_and_login_form_has_csrf(people, client):
    page = client.get(reverse("login"))
    assert b"csrfmiddlewaretoken" in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response.cookies["sessionid"]["httponly"]


def test_login_is_throttled_after_repeated_failures(people, client):
    for _ in range(5):
        client.post(reverse("login"), {"username": "dave", "password": "wrong"})
    # even the right password is refused while the lockout lasts
    locked = client.post(reverse("login"), {"username": "dave", "password": PASSWORD})
    assert locked.status_code in (403, 429)
    assert not client.session.get("_auth_user_id")
