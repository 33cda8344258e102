"""Access reviews (#18): a campaign over a real cluster, decided, past its deadline, and reported.

The journey test runs the real engine (a Celery worker applies the revoke requests) against the
session's managed cluster and checks pg_catalog itself; the permission tests go through the API.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from psycopg import sql
from pypdf import PdfReader

from audit.exports.pdf import build_report
from audit.models import AuditEvent
from audit.selectors import AuditFilters
from portal.choices import MembershipRole, RequestStatus
from portal.models import AccessReviewCampaign, AccessReviewItem, ChangeRequest, Grant, Instance, Team
from portal.services.access_review_decisions import (
    campaigns_process_deadlines,
    campaigns_send_reminders,
    item_reassign,
    items_decide,
)
from portal.services.access_reviews import campaign_open, campaign_report_export, choose_certifier
from portal.services.demo import membership_add
from provisioning.models import RoleLastSeen
from tests.provisioning.helpers import admin_conn, approved_request, grant_payload, role_payload, schema_payload, unique
from tests.security.test_webhooks import Recorder

pytestmark = pytest.mark.slow


def _privilege(cluster, query: str, *args: str) -> bool:
    with admin_conn(cluster) as conn:
        return bool(conn.execute(query, args).fetchone()[0])


def _apply(wait_for_status, *requests: ChangeRequest) -> None:
    for request in requests:
        done = wait_for_status(request.pk, {"applied", "failed"})
        assert done.status == RequestStatus.APPLIED, done.status_detail


@pytest.fixture
def reviewed_world(transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status):
    """A payments schema with one table; a grant through the portal to an analytics role (asked by
    dave), a grant to a payments role asked by alice (the team's lead: she holds it), and a role
    made outside the portal with USAGE and SELECT granted directly on the cluster."""
    schema, bot, own, outside = unique("ars"), unique("arbot"), unique("aralice"), unique("arout")
    _apply(wait_for_status,
           approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
           approved_request(managed_instance, "role", role_payload(bot, login=True), requester=people["dave"],
                            team="analytics"),
           approved_request(managed_instance, "role", role_payload(own, login=True), requester=people["alice"]))
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.ledger (id int)").format(sql.Identifier(schema)))
    _apply(wait_for_status,
           approved_request(managed_instance, "grant", grant_payload(bot, schema, ["SELECT"]),
                            requester=people["dave"], team="analytics"),
           approved_request(managed_instance, "grant", grant_payload(own, schema, ["SELECT"]),
                            requester=people["alice"]))
    with admin_conn(managed_cluster) as conn:  # behind the portal's back
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(outside)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(outside)))
        conn.execute(sql.SQL("GRANT SELECT ON {}.ledger TO {}").format(sql.Identifier(schema),
                                                                        sql.Identifier(outside)))
    return {"schema": schema, "bot": bot, "own": own, "outside": outside}


def test_a_campaign_keeps_revokes_and_acts_on_the_unanswered_then_reports(
        reviewed_world, people, managed_cluster, managed_instance, wait_for_status):
    w = reviewed_world
    schema = w["schema"]
    # given a campaign opened by a reviewer over the instance, revoking what is left unanswered
    campaign = campaign_open(user=people["bob"], name="Q4 payments recertification",
                             scope={"instances": ["demo"]}, deadline=timezone.now() + timedelta(days=7),
                             unanswered_action="revoke", fallback_certifier=people["admin"], actor_ip="127.0.0.1")
    items = {(i.role, i.kind): i for i in AccessReviewItem.objects.filter(campaign=campaign, schema=schema)}
    # then the live privileges were snapshotted: both portal grants (one item each) and the two
    # privileges granted outside the portal
    assert set(items) == {(w["bot"], "grant"), (w["own"], "grant"), (w["outside"], "schema"),
                          (w["outside"], "tables")}
    bot_item, own_item = items[(w["bot"], "grant")], items[(w["own"], "grant")]
    usage_item, select_item = items[(w["outside"], "schema")], items[(w["outside"], "tables")]
    assert select_item.source == "outside" and select_item.privileges == ["SELECT"]
    assert select_item.tables == "all"  # every table of the schema (its only one)
    # and each has its certifier: the owning team's lead, but never the holder (alice asked for her
    # own team's grant: the named fallback certifies it)
    assert bot_item.certifier == people["alice"] and bot_item.certifier_reason == "team_lead"
    assert own_item.holders == ["alice"] and own_item.certifier == people["admin"]
    assert own_item.certifier_reason == "fallback"
    assert usage_item.certifier == people["alice"] and select_item.certifier == people["alice"]
    # and the evidence names who asked and who approved
    assert bot_item.evidence["requester"] == "dave" and bot_item.evidence["request_type"] == "grant"
    opened = AuditEvent.objects.get(action="review.campaign_opened", object_id=str(campaign.pk))
    assert opened.outcome == "opened" and opened.details["items"] >= 4

    # when nobody but the certifier may decide
    with pytest.raises(Exception) as refused:
        items_decide(campaign=campaign, user=people["bob"], item_ids=[bot_item.pk], decision="keep",
                     comment="not mine")
    assert type(refused.value).__name__ == "PolicyViolation"
    with pytest.raises(Exception) as refused:
        items_decide(campaign=campaign, user=people["alice"], item_ids=[bot_item.pk, own_item.pk],
                     decision="keep", comment="both")
    assert type(refused.value).__name__ == "PolicyViolation"
    assert not AccessReviewItem.objects.filter(pk=bot_item.pk).exclude(decision="").exists()  # all or nothing

    # and alice keeps the analytics grant and revokes the outside SELECT; admin shortens the grant
    items_decide(campaign=campaign, user=people["alice"], item_ids=[bot_item.pk], decision="keep",
                 comment="analytics still reads the ledger")
    items_decide(campaign=campaign, user=people["alice"], item_ids=[select_item.pk], decision="revoke",
                 comment="nobody asked for this")
    until = timezone.now() + timedelta(days=30)
    items_decide(campaign=campaign, user=people["admin"], item_ids=[own_item.pk], decision="shorten",
                 comment="until the migration ends", expires_at=until)
    assert Grant.objects.get(pk=own_item.grant_id).expires_at == until
    select_item.refresh_from_db()
    revoke = select_item.revoke_request
    assert revoke is not None and revoke.requester_id is None and revoke.type == "revoke"
    assert revoke.approvals.get().reviewer == people["alice"]

    # then the worker applies the revoke and the privilege is gone from pg_catalog
    _apply(wait_for_status, revoke)
    assert not _privilege(managed_cluster, "SELECT has_table_privilege(%s, %s, 'SELECT')", w["outside"],
                          f"{schema}.ledger")
    assert _privilege(managed_cluster, "SELECT has_table_privilege(%s, %s, 'SELECT')", w["bot"],
                      f"{schema}.ledger")  # kept
    assert _privilege(managed_cluster, "SELECT has_schema_privilege(%s, %s, 'USAGE')", w["outside"], schema)

    # when the deadline passes with the outside USAGE unanswered and the deadline job runs
    AccessReviewCampaign.objects.filter(pk=campaign.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    # (the snapshot holds items of other tests' leftovers on the shared cluster: only ours matter here)
    others = AccessReviewItem.objects.filter(campaign=campaign, decision="").exclude(pk=usage_item.pk)
    for item in others:
        AccessReviewItem.objects.filter(pk=item.pk).update(decision="keep", comment="other test",
                                                           decided_at=timezone.now(), decided_by=item.certifier)
    assert campaigns_process_deadlines() == [campaign.pk]
    assert campaigns_process_deadlines() == []  # once
    usage_item.refresh_from_db()
    # then its configured action happened: a system revoke, decided by nobody, applied
    assert usage_item.decision == "revoke" and usage_item.decided_by is None
    _apply(wait_for_status, usage_item.revoke_request)
    assert not _privilege(managed_cluster, "SELECT has_schema_privilege(%s, %s, 'USAGE')", w["outside"], schema)
    campaign.refresh_from_db()
    assert campaign.status == "closed" and campaign.closed_at is not None

    # and the report holds the scope, the certifiers, each decision and each applied revocation
    content, content_type, filename = campaign_report_export(campaign=campaign, user=people["carol"], format="csv")
    assert content_type.startswith("text/csv") and filename == f"access-review-{campaign.pk}.csv"
    lines = content.decode().splitlines()
    summary = {row[0]: row[1] for row in csv.reader(lines) if row and row[0].startswith("#")}
    assert summary["# completion_rate"] == "100.0%" and summary["# scope"].startswith("instances: demo")
    assert "alice" in summary["# certifiers"] and "admin" in summary["# certifiers"]
    header_at = next(i for i, line in enumerate(lines) if line.startswith("item,"))
    rows = {r["item"]: r for r in csv.DictReader(io.StringIO("\n".join(lines[header_at:])))}
    assert rows[str(bot_item.pk)]["decision"] == "keep"
    assert rows[str(bot_item.pk)]["comment"] == "analytics still reads the ledger"
    assert rows[str(select_item.pk)]["revoke_status"] == "applied" and rows[str(select_item.pk)]["revoke_applied_at"]
    assert rows[str(usage_item.pk)]["decided_by"] == "system"
    assert rows[str(own_item.pk)]["new_expires_at"].startswith(until.strftime("%Y-%m-%d"))
    pdf, content_type, _ = campaign_report_export(campaign=campaign, user=people["carol"], format="pdf")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    compact = "".join(text.split())  # table cells wrap long words
    assert "Access review report" in text and "Q4 payments recertification" in text
    assert w["outside"] in compact and "nobodyaskedforthis" in compact and "100.0%" in text
    assert "analyticsstillreadstheledger" in compact and "applied" in text
    exported = AuditEvent.objects.filter(action="review.report_exported", object_id=str(campaign.pk))
    assert sorted(e.details["format"] for e in exported) == ["csv", "pdf"]
    decided = AuditEvent.objects.filter(action="review.item_decided",
                                        object_id__in=[str(i.pk) for i in items.values()])
    assert sorted(e.outcome for e in decided) == ["kept", "revoked", "revoked", "shortened"]
    assert AuditEvent.objects.filter(action="review.campaign_closed", object_id=str(campaign.pk)).exists()


# --- certifier choice, escalation, reminders and permissions (no cluster) ------------------------


def test_the_certifier_is_never_a_holder(db):
    lead, second, fallback, opener = (User(username=n, pk=i) for i, n in enumerate(["l", "s", "f", "o"], 1))
    leads = {7: [lead, second]}
    assert choose_certifier(owning_team_id=7, holders=set(), leads=leads, fallback=fallback, opener=opener)[0] == lead
    assert choose_certifier(owning_team_id=7, holders={"l"}, leads=leads, fallback=fallback,
                            opener=opener) == (second, "team_lead")
    assert choose_certifier(owning_team_id=7, holders={"l", "s"}, leads=leads, fallback=fallback,
                            opener=opener) == (fallback, "fallback")
    assert choose_certifier(owning_team_id=None, holders=set(), leads=leads, fallback=fallback,
                            opener=opener) == (fallback, "fallback")
    assert choose_certifier(owning_team_id=None, holders={"f"}, leads=leads, fallback=fallback,
                            opener=opener) == (opener, "opener")
    assert choose_certifier(owning_team_id=7, holders={"l", "s", "f", "o"}, leads=leads, fallback=fallback,
                            opener=opener) == (None, "")


def _campaign(people, instance, **extra) -> tuple[AccessReviewCampaign, AccessReviewItem]:
    campaign = AccessReviewCampaign.objects.create(
        name="matrix", scope={"instances": [instance.name]}, deadline=timezone.now() + timedelta(days=3),
        unanswered_action=extra.pop("action", "revoke"), fallback_certifier=people["admin"], opened_by=people["bob"])
    item = AccessReviewItem.objects.create(
        campaign=campaign, instance=instance, database="app", schema="s", role="r", kind="grant",
        privileges=["SELECT"], tables="all", source="outside", owning_team=Team.objects.get(name="payments"),
        holders=["dave"], certifier=people["alice"], certifier_reason="team_lead", evidence={"expires_at": None})
    return campaign, item


@pytest.fixture
def plain_instance(db):
    return Instance.objects.create(name="plain", environment="dev", kind="external", host="127.0.0.1", port=1,
                                   database="postgres", admin_user="postgres")


def test_who_may_open_read_decide_and_report(people, api_for, plain_instance):
    campaign, item = _campaign(people, plain_instance)
    base = "/api/v1/reviews/campaigns/"
    body = {"name": "x", "deadline": (timezone.now() + timedelta(days=1)).isoformat(),
            "unanswered_action": "revoke", "fallback_certifier": "admin", "scope": {"instances": ["nope"]}}
    # open: reviewers and admins (a developer or an auditor: 403)
    for name, code in (("alice", 403), ("dave", 403), ("carol", 403), ("bob", 400), ("admin", 400)):
        assert api_for(name).post(base, body, format="json").status_code == code, name
    assert api_for("bob").post(base, body, format="json").json()["errors"] == {
        "scope.instances": ["no instance 'nope'"]}
    # read: reviewers, auditors, admins, and the certifier; dave has no item: 404
    for name, code in (("alice", 200), ("bob", 200), ("carol", 200), ("admin", 200), ("dave", 404)):
        assert api_for(name).get(f"{base}{campaign.pk}/").status_code == code, name
    assert api_for("dave").get(base).json()["results"] == []
    assert api_for(None).get(base).status_code == 401
    # decide: the certifier only; a reviewer or admin who sees the item gets 403, dave 404
    decide = {"items": [item.pk], "decision": "keep", "comment": "ok"}
    for name, code in (("bob", 403), ("admin", 403), ("carol", 403), ("dave", 404)):
        assert api_for(name).post(f"{base}{campaign.pk}/decide/", decide, format="json").status_code == code, name
    assert api_for("alice").post(f"{base}{campaign.pk}/decide/", {**decide, "decision": "maybe"},
                                 format="json").status_code == 400
    assert api_for("alice").post(f"{base}{campaign.pk}/decide/", {**decide, "comment": ""},
                                 format="json").status_code == 400
    # report: reviewers, auditors and admins; a certifier who is none of them: 403
    assert api_for("alice").get(f"{base}{campaign.pk}/report/?format=csv").status_code == 403
    assert api_for("carol").get(f"{base}{campaign.pk}/report/?format=xls").status_code == 400
    response = api_for("carol").get(f"{base}{campaign.pk}/report/?format=csv")
    assert response.status_code == 200 and b"# completion_rate,0.0%" in response.content
    # reassign: admins only, never to a holder
    reassign = {"item": item.pk, "certifier": "bob"}
    assert api_for("bob").post(f"{base}{campaign.pk}/reassign/", reassign, format="json").status_code == 403
    assert api_for("admin").post(f"{base}{campaign.pk}/reassign/", {**reassign, "certifier": "dave"},
                                 format="json").status_code == 400
    assert api_for("admin").post(f"{base}{campaign.pk}/reassign/", reassign, format="json").status_code == 200
    assert api_for("alice").post(f"{base}{campaign.pk}/decide/", decide, format="json").status_code == 404
    response = api_for("bob").post(f"{base}{campaign.pk}/decide/", decide, format="json")
    assert response.status_code == 200 and response.json()[0]["decision"] == "keep"
    assert api_for("bob").post(f"{base}{campaign.pk}/decide/", decide, format="json").status_code == 409
    events = AuditEvent.objects.filter(action="review.item_decided", object_id=str(item.pk))
    assert [(e.actor, e.outcome, e.details["comment"]) for e in events] == [("bob", "kept", "ok")]
    assert AccessReviewCampaign.objects.get(pk=campaign.pk).status == "closed"


def test_items_list_is_filtered_and_its_queries_pinned(people, api_for, plain_instance,
                                                       django_assert_max_num_queries):
    campaign, item = _campaign(people, plain_instance)
    for n in range(30):
        AccessReviewItem.objects.create(campaign=campaign, instance=plain_instance, database="app", schema="s",
                                        role=f"r{n}", kind="schema", privileges=["USAGE"], source="outside",
                                        certifier=people["alice"], evidence={})
    seen = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    RoleLastSeen.objects.create(instance=plain_instance, role="r", last_seen_at=seen, database="app", sessions=1)
    client = api_for("alice")
    with django_assert_max_num_queries(8):
        response = client.get(f"/api/v1/reviews/campaigns/{campaign.pk}/items/?decision=pending")
    assert response.status_code == 200 and response.json()["count"] == 31
    by_role = {row["role"]: row for row in response.json()["results"]}
    # last seen connected: from helper sampling of pg_stat_activity (RoleLastSeen), else null
    assert by_role["r"]["last_seen"] == seen.isoformat().replace("+00:00", "Z") and by_role["r0"]["last_seen"] is None
    assert client.get(f"/api/v1/reviews/campaigns/{campaign.pk}/items/?role=r3").json()["count"] == 1
    assert client.get(f"/api/v1/reviews/campaigns/{campaign.pk}/items/?decision=x").status_code == 400
    with django_assert_max_num_queries(6):
        assert client.get("/api/v1/reviews/campaigns/").status_code == 200


def test_an_unanswered_item_escalates_to_the_certifiers_own_lead(people, plain_instance):
    # given alice is a member of the platform team, led by admin
    platform = Team.objects.create(name="platform")
    membership_add(user=people["alice"], team=platform, role=MembershipRole.MEMBER)
    membership_add(user=people["admin"], team=platform, role=MembershipRole.LEAD)
    campaign, item = _campaign(people, plain_instance, action="escalate")
    # when the deadline passes unanswered
    AccessReviewCampaign.objects.filter(pk=campaign.pk).update(deadline=timezone.now() - timedelta(minutes=1))
    assert campaigns_process_deadlines() == [campaign.pk]
    # then admin certifies it now, and it is recorded
    item.refresh_from_db()
    assert item.certifier == people["admin"] and item.certifier_reason == "escalated"
    assert item.escalated_from == people["alice"] and item.decision == ""
    event = AuditEvent.objects.get(action="review.escalated", object_id=str(item.pk))
    assert event.outcome == "escalated" and event.details["to"] == "admin"
    # and the campaign stays open until admin decides
    assert AccessReviewCampaign.objects.get(pk=campaign.pk).status == "open"
    items_decide(campaign=campaign, user=people["admin"], item_ids=[item.pk], decision="keep", comment="needed")
    assert AccessReviewCampaign.objects.get(pk=campaign.pk).status == "closed"


def test_reminders_go_to_certifiers_once_a_day_before_the_deadline(people, plain_instance, mailoutbox):
    campaign, item = _campaign(people, plain_instance)
    with Recorder() as receiver:  # the owning team's webhook, on loopback
        Team.objects.filter(name="payments").update(webhook_url=receiver.url)
        assert campaigns_send_reminders() == [campaign.pk]
        assert campaigns_send_reminders() == []  # not again within a day
    assert [m.to for m in mailoutbox] == [["alice@example.test"]]
    assert "1 item(s) to certify" in mailoutbox[0].subject
    assert len(receiver.received) == 1
    body = receiver.received[0]["body"]
    assert body["event"] == "review.reminder" and body["campaign"]["pending"] == {"alice": 1}
    event = AuditEvent.objects.get(action="review.reminder_sent", object_id=str(campaign.pk))
    assert event.details["pending"] == {"alice": 1} and event.outcome == "sent"
    assert event.details["webhooks"] == {"payments": "204"}
    later = timezone.now() + timedelta(hours=25)
    assert campaigns_send_reminders(now=later) == [campaign.pk]
    # none after the deadline
    assert campaigns_send_reminders(now=timezone.now() + timedelta(days=4)) == []


def test_an_admin_reassigns_but_not_to_a_holder(people, plain_instance):
    campaign, item = _campaign(people, plain_instance)
    with pytest.raises(Exception) as refused:
        item_reassign(item=item, user=people["bob"], certifier=people["carol"])
    assert type(refused.value).__name__ == "PolicyViolation"
    with pytest.raises(Exception) as refused:
        item_reassign(item=item, user=people["admin"], certifier=people["dave"])
    assert type(refused.value).__name__ == "InvalidPayload"
    item_reassign(item=item, user=people["admin"], certifier=people["carol"], comment="alice is away")
    assert AuditEvent.objects.get(action="review.item_reassigned").details["to"] == "carol"


def test_the_periods_compliance_pdf_lists_its_campaigns(people, plain_instance):
    campaign, _ = _campaign(people, plain_instance)
    campaign.name = "H2 recertification"
    campaign.save(update_fields=["name"])
    now = timezone.now()
    handle = build_report(filters=AuditFilters(since=now - timedelta(days=1), until=now + timedelta(days=1)),
                          author=people["carol"], entitlements_at=lambda at: SimpleNamespace(rows=[]))
    text = "\n".join(page.extract_text() for page in PdfReader(handle).pages)
    assert "Access review campaigns" in text and "H2 recertification" in text and "0/1 (0.0%)" in text
    # a period that ended before the campaign opened does not list it
    handle = build_report(filters=AuditFilters(since=now - timedelta(days=9), until=now - timedelta(days=8)),
                          author=people["carol"], entitlements_at=lambda at: SimpleNamespace(rows=[]))
    text = "\n".join(page.extract_text() for page in PdfReader(handle).pages)
    assert "No access review campaign was open in this period." in text and "H2 recertification" not in text


def test_the_pages_show_a_certifier_their_queue_and_decide_in_bulk(people, web_for, plain_instance,
                                                                    django_assert_max_num_queries):
    campaign, item = _campaign(people, plain_instance)
    second = AccessReviewItem.objects.create(
        campaign=campaign, instance=plain_instance, database="app", schema="s", role="r2", kind="schema",
        privileges=["USAGE"], source="outside", certifier=people["alice"], evidence={"drift": [
            {"id": 9, "status": "open", "privilege": "USAGE", "object": "s", "detected_at": "2026-12-01"}]})
    client = web_for("alice")
    with django_assert_max_num_queries(16):
        page = client.get(f"/access-reviews/{campaign.pk}/")
    html = page.content.decode()
    assert page.status_code == 200 and f'id="tick-{item.pk}"' in html and "not sampled yet" in html
    assert "outside the portal" in html and ">drift<" in html and 'id="report-csv"' not in html  # no report for her
    assert client.get("/access-reviews/").status_code == 200
    response = client.post(f"/access-reviews/{campaign.pk}/decide/",
                           {"items": [item.pk, second.pk], "decision": "keep", "comment": "both needed"})
    assert response.status_code == 302
    assert set(AccessReviewItem.objects.filter(campaign=campaign).values_list("decision", flat=True)) == {"keep"}
    assert AuditEvent.objects.filter(action="review.item_decided").count() == 2  # one event per item
    # a reviewer opens one from the form; bad input comes back with the field named, nothing stored
    reviewer = web_for("bob")
    response = reviewer.post("/access-reviews/new/", {"name": "", "deadline": "2020-01-01T00:00",
                                                      "unanswered_action": "revoke", "fallback_certifier": "admin"})
    assert response.status_code == 400 and "id_name_error" in response.content.decode()
    assert AccessReviewCampaign.objects.count() == 1
    response = reviewer.post("/access-reviews/new/", {"name": "x", "deadline": "2020-01-01T00:00",
                                                      "unanswered_action": "revoke", "fallback_certifier": "admin",
                                                      "instances": ["plain"]})
    assert response.status_code == 400 and "must be in the future" in response.content.decode()


def test_the_deadline_hands_an_orphan_it_cannot_revoke_to_the_fallback_and_retries_an_unreachable_one(
        people, plain_instance):
    campaign, item = _campaign(people, plain_instance)
    orphan = AccessReviewItem.objects.create(
        campaign=campaign, instance=plain_instance, database="app", schema="s", role="lost", kind="schema",
        privileges=["USAGE"], source="outside", certifier=people["alice"], evidence={})
    AccessReviewCampaign.objects.filter(pk=campaign.pk).update(deadline=timezone.now() - timedelta(minutes=1))
    # the instance cannot be reached: the owned item waits for the next run; the orphan (no team,
    # so no revoke request can carry it) goes to the fallback certifier
    assert campaigns_process_deadlines() == [campaign.pk]
    orphan.refresh_from_db()
    item.refresh_from_db()
    assert orphan.certifier == people["admin"] and orphan.certifier_reason == "escalated" and not orphan.decision
    assert item.decision == "" and item.certifier == people["alice"]
    event = AuditEvent.objects.get(action="review.escalated", object_id=str(orphan.pk))
    assert event.details["reason"].startswith("not revoked automatically")
    assert AccessReviewCampaign.objects.get(pk=campaign.pk).deadline_processed_at is None  # tried again later
    # the next run acts on the unreachable item only: the escalated orphan is its new certifier's
    campaigns_process_deadlines()
    assert AuditEvent.objects.filter(action="review.escalated", object_id=str(orphan.pk)).count() == 1


@pytest.mark.parametrize(("scope", "field", "message"), [
    ({"environments": ["prod"]}, "scope", "no active instance is in this scope"),
    ({"environments": ["qa"]}, "scope.environments", "one of: dev, staging, prod"),
    ({"teams": ["ghosts"]}, "scope.teams", "no team 'ghosts'"),
    ({"instances": "plain"}, "scope.instances", "a list of at most 100 names"),
    ({"owners": ["x"]}, "scope", "unknown keys: owners"),
    ("everything", "scope", "an object with instances, environments and teams"),
])
def test_a_bad_scope_is_a_400_naming_the_field_and_opens_nothing(people, plain_instance, scope, field, message):
    with pytest.raises(Exception) as refused:
        campaign_open(user=people["bob"], name="x", scope=scope, deadline=timezone.now() + timedelta(days=1),
                      unanswered_action="revoke", fallback_certifier=people["admin"])
    assert type(refused.value).__name__ == "InvalidPayload" and refused.value.errors == {field: [message]}
    assert not AccessReviewCampaign.objects.exists()
