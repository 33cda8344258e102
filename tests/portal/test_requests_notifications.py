"""Notifications: e-mail and the team's JSON webhook after each transition, sent by a Celery task."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from portal.models import Team
from portal.services.notifications import notify_send
from portal.services.requests import request_approve, request_submit
from portal.tasks import notify_request
from tests.portal.requests_helpers import unique


@pytest.fixture
def webhook():
    """A loopback HTTP server recording the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "type": self.headers["Content-Type"],
                             "body": json.loads(self.rfile.read(length))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_port}/hook", "received": received}
    server.shutdown()
    server.server_close()


def submit(people, instance):
    return request_submit(user=people["alice"], actor_ip=None, type="schema", instance=instance,
                          team=Team.objects.get(name="payments"), justification="notify",
                          payload={"database": "app", "name": unique("ntf")})


def test_each_transition_enqueues_a_notification_after_commit(people, managed_instance,
                                                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        request = submit(people, managed_instance)
    # the notification (publishing it to the real broker did not raise), besides the audit chainer's
    assert len(_without_chainer(callbacks)) == 1
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request_approve(request=request, reviewer=people["bob"], comment="")
    # approved notification + the outbox send, both only after commit
    assert len(_without_chainer(callbacks)) == 2


def _without_chainer(callbacks: list) -> list:
    """The transaction's callbacks but the audit chainer's (audit/chainer.py: one per transaction)."""
    from audit.chainer import chain_after_commit

    return [callback for callback in callbacks if callback is not chain_after_commit]


def test_the_task_mails_the_requester_and_reviewers_and_posts_json_to_the_webhook(people, managed_instance,
                                                                                    webhook):
    Team.objects.filter(name="payments").update(webhook_url=webhook["url"])
    request = submit(people, managed_instance)
    notify_request.apply(args=[request.pk, "submitted"])  # the task body, run here as a worker would
    assert len(mail.outbox) == 1
    assert set(mail.outbox[0].to) == {"alice@example.test", "bob@example.test", "admin@example.test"}
    assert f"request #{request.pk}" in mail.outbox[0].subject
    assert len(webhook["received"]) == 1
    posted = webhook["received"][0]
    assert posted["path"] == "/hook" and posted["type"] == "application/json"
    assert posted["body"]["event"] == "request.submitted"
    assert posted["body"]["request"].items() >= {"id": request.pk, "type": "schema", "status": "submitted",
                                               "team": "payments", "instance": "demo", "requester": "alice"}.items()


def test_no_webhook_when_unset_and_never_to_hosts_outside_the_allowed_targets(people, managed_instance, webhook):
    request = submit(people, managed_instance)
    assert notify_send(request.pk, "approved")["webhook"] is None
    # decided without any traffic: 203.0.113.0/24 is outside PORTAL_ALLOWED_TARGETS
    Team.objects.filter(name="payments").update(webhook_url="http://203.0.113.7/hook")
    assert notify_send(request.pk, "approved")["webhook"] == "not allowed"
    assert webhook["received"] == []
    assert mail.outbox[-1].to == ["alice@example.test"]


def test_a_webhook_that_fails_does_not_raise(people, managed_instance, webhook):
    Team.objects.filter(name="payments").update(webhook_url="http://127.0.0.1:1/closed")
    request = submit(people, managed_instance)
    assert notify_send(request.pk, "rejected")["webhook"].startswith("failed")


def test_the_link_is_absolute_under_the_configured_base_url(people, managed_instance, webhook, settings):
    # given a portal reached at https://dbportal.example.test (PORTAL_BASE_URL) with a team webhook
    settings.PORTAL_BASE_URL = "https://dbportal.example.test"
    Team.objects.filter(name="payments").update(webhook_url=webhook["url"])
    request = submit(people, managed_instance)
    # when the submitted notification goes out
    notify_send(request.pk, "submitted")
    # then the mail and the webhook both link to the request page there
    link = f"https://dbportal.example.test/requests/{request.pk}/"
    assert webhook["received"][0]["body"]["request"]["url"] == link
    assert json.loads(mail.outbox[0].body)["request"]["url"] == link


def test_without_a_base_url_the_link_is_the_request_path(people, managed_instance, settings):
    settings.PORTAL_BASE_URL = ""
    request = submit(people, managed_instance)
    notify_send(request.pk, "submitted")
    assert json.loads(mail.outbox[0].body)["request"]["url"] == f"/requests/{request.pk}/"


def test_with_an_smtp_host_set_notifications_are_mailed_through_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.deployment import production_env
    from tests.support.smtp import smtp_server

    root = Path(__file__).resolve().parents[2]
    with smtp_server() as (port, received):
        # given a deployment whose environment names a mail server with a login
        env = production_env(tmp_path)
        env.update(PORTAL_SMTP_HOST="127.0.0.1", PORTAL_SMTP_PORT=str(port), PORTAL_SMTP_USER="dbportal",
                   PORTAL_SMTP_PASSWORD="mail-secret", PORTAL_FROM_EMAIL="dbportal@example.test")
        # when the portal sends a mail (as notify_send does: send_mail with the default sender)
        script = ("from django.core.mail import send_mail; "
                  "send_mail('[dbportal] request #7 (schema) submitted', 'body', None, ['bob@example.test'])")
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=root, env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # then the server got it, from the configured sender, after the configured login
    assert len(received) == 1
    assert received[0]["auth"] == ("PLAIN", "dbportal", "mail-secret")
    assert received[0]["from"] == "dbportal@example.test" and received[0]["to"] == ["bob@example.test"]
    assert "Subject: [dbportal] request #7 (schema) submitted" in received[0]["data"]


def test_a_mail_server_that_refuses_is_logged_and_costs_only_the_mail(people, managed_instance, settings, caplog):
    import logging
    import socket

    # given the SMTP backend pointed at a loopback port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port
    caplog.set_level(logging.WARNING)
    request = submit(people, managed_instance)
    # when the notification goes out: nothing raises, no mail counts as sent, and the log says why
    assert notify_send(request.pk, "submitted")["email"] == []
    assert "notify.email_failed" in caplog.text and "ConnectionRefusedError" in caplog.text
