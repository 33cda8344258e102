"""The web journey with a real worker: alice submits a login role on the page, bob approves on the
page, the worker applies it, the page stops polling at `applied` and alice reveals the password once
and logs in with it."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from django.urls import reverse

from portal.models import ChangeRequest

pytestmark = pytest.mark.slow


def test_login_role_through_the_pages(transactional_db, people, managed_cluster, managed_instance,
                                      celery_worker, wait_for_status):
    from django.test import Client

    name = f"web_{uuid.uuid4().hex[:8]}"
    alice, bob = Client(), Client()
    alice.force_login(people["alice"])
    bob.force_login(people["bob"])
    team = people["alice"].teams.get(name="payments")
    # alice: the live preview, then submit
    form = {"instance": managed_instance.pk, "team": team.pk, "justification": "the billing service",
            "name": name, "login": "on"}
    preview = alice.post(reverse("request-preview", args=["role"]), form, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="preview-result"' in preview and name in preview and "generated at apply time" in preview
    submitted = alice.post(reverse("request-new-form", args=["role"]), form)
    change = ChangeRequest.objects.get(payload__name=name)
    assert submitted["Location"] == reverse("request-detail", args=[change.pk])
    # bob: approve from the page (a confirmation dialog in the browser; here the form it posts)
    bob.post(reverse("request-action", args=[change.pk, "approve"]), {"comment": "ok for billing"})
    # the worker applies it; the live partial reports it and stops polling
    assert wait_for_status(change.pk, {"applied", "failed"}, timeout=90).status == "applied"
    live = alice.get(reverse("request-status", args=[change.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-status="applied"' in live and "hx-trigger" not in live
    assert 'id="reveal-password"' in live and 'id="execution-1"' in live
    # alice reveals the password once, and it works on the cluster
    shown = alice.post(reverse("request-reveal", args=[change.pk]), HTTP_HX_REQUEST="true").content.decode()
    password = re.search(r'id="revealed-password" type="text" value="([^"]+)"', shown).group(1)
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name
    again = alice.post(reverse("request-reveal", args=[change.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert password not in again and "already revealed" in again
    page = alice.get(reverse("request-detail", args=[change.pk])).content.decode()
    assert password not in page and 'id="reveal-gone"' in page
