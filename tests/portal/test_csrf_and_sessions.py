"""CSRF on every form and every UI POST; sessions that expire.

- Every `<form method="post">` in the templates carries {% csrf_token %}, and every POST form on
  every rendered page (as each persona) has the hidden token; htmx requests send it as a header.
- Every UI route that accepts POST (the rows of the permission matrix) answers 403 to a POST
  without the token, even from a logged-in user.
- Sessions: an idle session expires after SESSION_COOKIE_AGE; each request pushes the expiry out
  (SESSION_SAVE_EVERY_REQUEST).
"""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from tests.portal.permission_matrix import ROWS, USERNAMES
from tests.portal.test_permission_matrix import fill, world  # noqa: F401 - the matrix's objects

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [ROOT / "templates", *ROOT.glob("*/templates")]
POST_FORM = re.compile(r"<form\b[^>]*\bmethod\s*=\s*[\"']?post[\"']?[^>]*>(.*?)</form>", re.I | re.S)
UI_POST_ROWS = [row for row in ROWS if row.method == "POST" and not row.path.startswith("/api/")]
UI_PAGES = [row for row in ROWS if row.method == "GET" and not row.path.startswith("/api/")
            and row.route not in ("healthz", "prometheus-django-metrics", "dashboard-data", "request-status")]


def html_pages(persona: str, objects: dict, people: dict):
    """(path, response) for every UI page the persona is shown as HTML (200), signed in as them;
    `objects`: the matrix's world, whose ids fill the paths."""
    client = Client()
    if USERNAMES[persona]:
        client.force_login(people[USERNAMES[persona]])
    for row in UI_PAGES:
        response = client.get(fill(row.path, objects))
        if response.status_code == 200 and "text/html" in response["Content-Type"]:
            yield row.path, response


def test_every_post_form_in_the_templates_has_a_csrf_token():
    missing = []
    for directory in TEMPLATE_DIRS:
        for template in directory.rglob("*.html"):
            for form in POST_FORM.finditer(template.read_text()):
                if "{% csrf_token %}" not in form.group(1):
                    line = template.read_text()[: form.start()].count("\n") + 1
                    missing.append(f"{template.relative_to(ROOT)}:{line}")
    assert not missing, f"POST forms without {{% csrf_token %}}: {missing}"


def test_htmx_requests_carry_the_csrf_token_as_a_header():
    base = (ROOT / "templates" / "base.html").read_text()
    assert "hx-headers='{\"X-CSRFToken\": \"{{ csrf_token }}\"}'" in base


class Forms(HTMLParser):
    """POST forms of a page, and whether each holds the hidden csrfmiddlewaretoken."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form" and (attributes.get("method") or "").lower() == "post":
            self._open = {"action": attributes.get("action", ""), "token": False}
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and attributes.get("name") == "csrfmiddlewaretoken":
            self._open["token"] = bool(attributes.get("value"))

    def handle_endtag(self, tag):
        if tag == "form":
            self._open = None


@pytest.mark.parametrize("persona", ["anonymous", "developer", "reviewer", "auditor", "admin"])
def test_every_post_form_on_every_page_carries_a_token(persona, world, people):  # noqa: F811
    seen, missing = 0, []
    for path, response in html_pages(persona, world, people):
        parser = Forms()
        parser.feed(response.content.decode())
        seen += len(parser.forms)
        missing += [f"{path} -> {form['action'] or '(self)'}" for form in parser.forms if not form["token"]]
    assert seen, "no POST form rendered at all: the walk saw nothing"
    assert not missing, f"POST forms without a CSRF token for {persona}: {missing}"


@pytest.mark.parametrize("row", UI_POST_ROWS, ids=[row.route for row in UI_POST_ROWS])
def test_a_ui_post_without_the_csrf_token_is_refused(row, world, people):  # noqa: F811
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["admin"])
    body = urlencode(fill(row.data, world))
    response = client.generic("POST", fill(row.path, world), body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 403, (row.path, response.status_code)


def test_the_login_form_itself_refuses_a_post_without_the_token(people):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "alice", "password": "whatever"})
    assert response.status_code == 403


def test_sessions_are_refreshed_by_each_request_and_end_when_idle_too_long(people, client):
    assert settings.SESSION_SAVE_EVERY_REQUEST and not settings.SESSION_EXPIRE_AT_BROWSER_CLOSE
    client.force_login(people["alice"])
    response = client.get("/requests/")
    assert response.status_code == 200
    # Every answer renews the cookie for the full idle period.
    assert int(response.cookies["sessionid"]["max-age"]) == settings.SESSION_COOKIE_AGE
    session = Session.objects.get(session_key=client.session.session_key)
    assert session.expire_date > timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE - 60)

    # Idle for longer than the age: the same cookie no longer logs anyone in.
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    expired = client.get("/requests/")
    assert expired.status_code == 302 and expired["Location"].startswith("/login/")
    assert client.get("/api/v1/requests/").status_code in (401, 403)
