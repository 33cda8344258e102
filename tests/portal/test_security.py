"""Security settings: deploy checks, secure cookies, the CSP on every page, login throttling."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from tests.fixtures.people import PASSWORD
from tests.portal.test_csrf_and_sessions import html_pages
from tests.portal.test_permission_matrix import world  # noqa: F401 - the matrix's objects
from tests.support.deployment import production_env

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = production_env(tmp_path)
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


COOKIE_FLAGS = ("SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE", "CSRF_COOKIE_HTTPONLY")


def test_production_cookies_are_secure_and_httponly_on_the_wire(people, tmp_path):
    # given the cookie flags as production settings load them (a separate process: the suite's own
    # settings turn Secure off so that the plain-http test server works)
    script = f"import json; from django.conf import settings; print(json.dumps({{k: getattr(settings, k) for k in {COOKIE_FLAGS!r}}}))"
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {script}"], cwd=ROOT,
                            env=production_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    production = json.loads(result.stdout)
    assert production == dict.fromkeys(COOKIE_FLAGS, True)
    # when someone signs in with exactly those flags, through the CSRF-checked login form
    with override_settings(**production):
        client = Client(enforce_csrf_checks=True)
        form = client.get(reverse("login"))
        token = form.cookies["csrftoken"]
        response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD,
                                                  "csrfmiddlewaretoken": form.context["csrf_token"]})
    # then both cookies on the wire carry Secure and HttpOnly
    assert response.status_code == 302
    for cookie in (response.cookies["sessionid"], response.cookies["csrftoken"], token):
        assert cookie["secure"] and cookie["httponly"], cookie.output()


class InlineCode(HTMLParser):
    """What a strict CSP (script-src/style-src 'self', no 'unsafe-inline') would block on a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        # A data block (json_script's type="application/json") is never run, so the CSP lets it be.
        data_block = (attributes.get("type") or "text/javascript").lower() not in ("text/javascript", "module")
        if tag == "script" and not attributes.get("src") and not data_block:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on") or name.startswith("hx-on"):
                self.found.append(f"<{tag} {name}=…> handler")
            elif name == "style":
                self.found.append(f"<{tag} style=…> attribute")
            elif value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")


@pytest.mark.parametrize("persona", ["anonymous", "developer", "reviewer", "auditor", "admin"])
def test_every_page_has_the_csp_and_nothing_inline_it_would_block(persona, world, people):  # noqa: F811
    pages, problems = 0, []
    for path, response in html_pages(persona, world, people):
        pages += 1
        policy = response.get("Content-Security-Policy", "")
        directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
        if directives.get("script-src") != ["'self'"] or directives.get("style-src") != ["'self'"]:
            problems.append(f"{path}: policy {policy!r}")
        parser = InlineCode()
        parser.feed(response.content.decode())
        problems += [f"{path}: {what}" for what in parser.found]
    assert pages >= (1 if persona == "anonymous" else 5), f"{persona} saw only {pages} pages: the walk saw nothing"
    assert not problems, f"{persona}: {problems}"
