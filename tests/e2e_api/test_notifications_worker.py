"""Notifications go through a real Celery worker: after each transition commits, the task
`portal.notify_request` POSTs the team's webhook (a loopback server started here) and mails."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from portal.models import Team
from tests.fixtures.celery import wait_until
from tests.portal.requests_helpers import schema_body

pytestmark = pytest.mark.slow


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_port}/hook", "received": received}
    server.shutdown()
    server.server_close()


def test_submitted_and_rejected_reach_the_webhook_through_the_worker(
    transactional_db, people, api_for, managed_instance, celery_worker, webhook
):
    Team.objects.filter(name="payments").update(webhook_url=webhook["url"])
    created = api_for("alice").post("/api/v1/requests/", schema_body(), format="json")
    assert created.status_code == 201
    request_id = created.json()["id"]
    rejected = api_for("bob").post(f"/api/v1/requests/{request_id}/reject/", {"comment": "not now"}, format="json")
    assert rejected.status_code == 200

    def both_events():
        events = sorted(body["event"] for body in webhook["received"] if body["request"]["id"] == request_id)
        return events if len(events) == 2 else None

    assert wait_until(both_events, timeout=60, message="two webhook calls") == ["request.rejected",
                                                                                 "request.submitted"]
    rejected_body = next(b for b in webhook["received"] if b["event"] == "request.rejected")
    assert rejected_body["request"]["status"] == "rejected"
    assert rejected_body["request"]["status_detail"] == "not now"
