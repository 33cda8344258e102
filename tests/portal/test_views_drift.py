"""Drift in the browser's terms: scan now on the instance page, then acknowledge; revoke asks first."""

from __future__ import annotations

import psycopg
import pytest
from django.urls import reverse

from audit.models import AuditEvent
from portal.models import ManagedSchema, Team
from provisioning.models import DriftFinding


@pytest.fixture
def hand_grant(people, managed_cluster, managed_instance):
    """A schema the portal manages, and a GRANT on it made by hand in psql to a role it does not know."""
    ManagedSchema.objects.create(instance=managed_instance, database="app", name="ui_drift", owner_role="postgres",
                                 team=Team.objects.get(name="payments"))
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS ui_drift CASCADE")
        conn.execute("DROP ROLE IF EXISTS ui_intern")
        conn.execute("CREATE ROLE ui_intern NOLOGIN")
        conn.execute("CREATE SCHEMA ui_drift")
        conn.execute("GRANT USAGE ON SCHEMA ui_drift TO ui_intern")
    yield managed_instance
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS ui_drift CASCADE")
        conn.execute("DROP ROLE IF EXISTS ui_intern")


def test_scan_now_shows_a_hand_grant_and_acknowledge_records_it(web_for, hand_grant):
    instance = hand_grant
    detail = reverse("instance-detail", args=[instance.pk])
    bob = web_for("bob")
    # when a reviewer presses "Scan now" on the instance page
    response = bob.post(reverse("drift-scan", args=[instance.pk]), {"next": detail}, follow=True)
    html = response.content.decode()
    # then the page says what the scan found and lists the finding with its actions
    assert f"Scanned {instance.name}" in html
    finding = DriftFinding.objects.get(role="ui_intern", privilege="USAGE")
    assert f'id="drift-{finding.pk}"' in html and f'id="ack-{finding.pk}"' in html
    assert f'id="revoke-{finding.pk}"' in html and f'id="drift-revoke-{finding.pk}"' in html  # confirm first
    # when they acknowledge it
    bob.post(reverse("drift-action", args=[finding.pk, "acknowledge"]), {"next": detail})
    finding.refresh_from_db()
    assert finding.status == "acknowledged" and finding.acknowledged_by.username == "bob"
    assert AuditEvent.objects.filter(action="drift.acknowledged", object_id=str(finding.pk)).exists()
    # and it leaves the open list
    assert f'id="drift-{finding.pk}"' not in bob.get(reverse("drift-list")).content.decode()
    assert f'id="drift-{finding.pk}"' in bob.get(reverse("drift-list"), {"status": "acknowledged"}).content.decode()


@pytest.mark.parametrize("username", ["alice", "carol"])
def test_only_reviewers_act_on_drift(web_for, people, managed_instance, username):
    finding = DriftFinding.objects.create(instance=managed_instance, kind="unexpected_privilege", role="x",
                                          object_type="schema", object_name="s", privilege="USAGE")
    client = web_for(username)
    assert client.post(reverse("drift-action", args=[finding.pk, "acknowledge"])).status_code == 403
    assert client.post(reverse("drift-scan", args=[managed_instance.pk])).status_code == 403
    finding.refresh_from_db()
    assert finding.status == "open"


def test_auditor_sees_drift_read_only(web_for, people, managed_instance):
    # given an open finding of a hand-made grant
    finding = DriftFinding.objects.create(instance=managed_instance, kind="unexpected_privilege", role="ro_intruder",
                                          object_type="schema", object_name="ledger", privilege="USAGE")
    carol = web_for("carol")
    # when the auditor opens the drift page and the instance page
    listing = carol.get(reverse("drift-list"))
    detail = carol.get(reverse("instance-detail", args=[managed_instance.pk]))
    # then both show the finding, with none of the reviewer's actions
    assert listing.status_code == 200 and detail.status_code == 200
    for html in (listing.content.decode(), detail.content.decode()):
        assert f'id="drift-{finding.pk}"' in html and "ro_intruder" in html
        assert f'id="ack-{finding.pk}"' not in html
        assert f'id="revoke-{finding.pk}"' not in html and f'id="drift-revoke-{finding.pk}"' not in html
        assert reverse("drift-action", args=[finding.pk, "acknowledge"]) not in html
        assert 'id="scan-now"' not in html
    # and the reviewer still gets the actions on the same pages
    bob_html = web_for("bob").get(reverse("instance-detail", args=[managed_instance.pk])).content.decode()
    assert f'id="ack-{finding.pk}"' in bob_html and 'id="scan-now"' in bob_html
