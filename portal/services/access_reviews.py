"""Access reviews (issue #18): open a campaign (the snapshot of live entitlements, a certifier for
each item), close it, and export its report. Deciding items, reassigning them, the reminders and
the deadline are portal/services/access_review_decisions.py's.

Who may do what (tested in tests/portal/test_access_reviews.py):
- open a campaign: security reviewers and platform admins;
- export its report: reviewers, auditors and platform admins;
- the campaign closes itself: when it opens with nothing to review, or once every item is decided.

Events (audit, each in the transaction of its change): review.campaign_opened,
review.campaign_closed, review.report_exported.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from audit.services import record
from portal.choices import (
    CampaignStatus,
    CertificationDecision,
    Decision,
    DriftKind,
    DriftStatus,
    Environment,
    InstanceStatus,
    MembershipRole,
    UnansweredAction,
)
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import (
    AccessReviewCampaign,
    AccessReviewItem,
    ChangeRequest,
    Grant,
    Instance,
    ManagedRole,
    ManagedSchema,
    Membership,
    Team,
)
from portal.personas import is_auditor, is_reviewer
from portal.selectors.access_reviews import campaign_report_csv, campaign_report_pdf
from portal.selectors.entitlements import Entitlement, entitlements_for
from provisioning.models import DriftFinding

MAX_NAME = 200
MAX_SCOPE_ENTRIES = 100
MAX_DEADLINE = timedelta(days=366)
# Entitlement kinds an access review covers: privileges a revoke request can take back. Ownership,
# superuser and sequence privileges are not recertified here (docs/access-reviews.md).
REVIEWED_KINDS = ("schema", "tables", "default")


# --- input checks -----------------------------------------------------------------------------


def _text(value: Any, field: str, *, limit: int, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidPayload.field(field, "must be text")
    value = value.strip()
    if required and not value:
        raise InvalidPayload.field(field, "required")
    if len(value) > limit:
        raise InvalidPayload.field(field, f"at most {limit} characters")
    return value


def _names(value: Any, field: str) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or len(value) > MAX_SCOPE_ENTRIES:
        raise InvalidPayload.field(field, f"a list of at most {MAX_SCOPE_ENTRIES} names")
    if any(not isinstance(v, str) or not v or len(v) > 63 for v in value):
        raise InvalidPayload.field(field, "each entry is a name of 1 to 63 characters")
    return sorted(set(value))


def _scope(scope: Any) -> tuple[dict[str, list[str]], list[Instance], list[Team]]:
    """The checked scope, the instances it covers and the teams it narrows to."""
    if scope is None:
        scope = {}
    if not isinstance(scope, dict):
        raise InvalidPayload.field("scope", "an object with instances, environments and teams")
    unknown = set(scope) - {"instances", "environments", "teams"}
    if unknown:
        raise InvalidPayload.field("scope", f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    names = _names(scope.get("instances"), "scope.instances")
    environments = _names(scope.get("environments"), "scope.environments")
    bad = [e for e in environments if e not in Environment.values]
    if bad:
        raise InvalidPayload.field("scope.environments", f"one of: {', '.join(Environment.values)}")
    team_names = _names(scope.get("teams"), "scope.teams")
    # Replicas carry their primary's privileges: the primary is reviewed, not each copy.
    instances = Instance.objects.exclude(status=InstanceStatus.RETIRED).filter(replica_of__isnull=True)
    if names:
        found = set(Instance.objects.filter(name__in=names).values_list("name", flat=True))
        missing = [n for n in names if n not in found]
        if missing:
            raise InvalidPayload.field("scope.instances", f"no instance {missing[0]!r}")
        instances = instances.filter(name__in=names)
    if environments:
        instances = instances.filter(environment__in=environments)
    teams = list(Team.objects.filter(name__in=team_names))
    if len(teams) != len(team_names):
        missing = sorted(set(team_names) - {t.name for t in teams})
        raise InvalidPayload.field("scope.teams", f"no team {missing[0]!r}")
    instance_list = list(instances.order_by("name"))
    if not instance_list:
        raise InvalidPayload.field("scope", "no active instance is in this scope")
    return {"instances": names, "environments": environments, "teams": team_names}, instance_list, teams


def _deadline(value: Any, now: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidPayload.field("deadline", "a date and time")
    if timezone.is_naive(value):
        raise InvalidPayload.field("deadline", "give the time zone (e.g. 2026-12-31T17:00:00Z)")
    if value <= now:
        raise InvalidPayload.field("deadline", "must be in the future")
    if value > now + MAX_DEADLINE:
        raise InvalidPayload.field("deadline", "at most a year ahead")
    return value


# --- the snapshot -----------------------------------------------------------------------------


def _leads_by_team(team_ids: set[int]) -> dict[int, list[User]]:
    leads: dict[int, list[User]] = defaultdict(list)
    for membership in (Membership.objects.filter(team_id__in=team_ids, role=MembershipRole.LEAD, user__is_active=True)
                       .select_related("user").order_by("user_id")):
        leads[membership.team_id].append(membership.user)
    return leads


def choose_certifier(*, owning_team_id: int | None, holders: set[str], leads: dict[int, list[User]],
                     fallback: User, opener: User) -> tuple[User | None, str]:
    """The owning team's lead; for an orphan (no team) or when every lead holds the privilege
    themself, the campaign's named fallback; then whoever opened the campaign. Never a holder:
    when all of them hold it, nobody (an admin reassigns it)."""
    for lead in leads.get(owning_team_id, []) if owning_team_id else []:
        if lead.username not in holders:
            return lead, "team_lead"
    if fallback.username not in holders and fallback.is_active:
        return fallback, "fallback"
    if opener.username not in holders:
        return opener, "opener"
    return None, ""


def _drift_by_instance(instance: Instance) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = defaultdict(list)
    findings = DriftFinding.objects.filter(instance=instance, kind=DriftKind.UNEXPECTED).exclude(
        status=DriftStatus.RESOLVED).order_by("pk")
    for finding in findings:
        schema = finding.object_name.split(" ", 1)[0].partition(".")[0]
        found[(finding.database, schema, finding.role)].append(
            {"id": finding.pk, "status": finding.status, "privilege": finding.privilege,
             "object": finding.object_name, "detected_at": finding.detected_at.isoformat()})
    return found


def _request_evidence(request: ChangeRequest | None) -> dict[str, Any]:
    if request is None:
        return {}
    approvers = [a.reviewer.username for a in request.approvals.all()
                 if a.decision == Decision.APPROVE and a.plan_hash == request.plan_hash]
    return {"request_id": request.pk, "request_type": request.type,
            "requester": request.requester.username if request.requester_id else "system",
            "requested_at": request.created_at.isoformat(), "approvers": approvers,
            "approved_at": request.approved_at.isoformat() if request.approved_at else None,
            "applied_at": request.applied_at.isoformat() if request.applied_at else None,
            "justification": request.justification[:500]}


def _items_of_instance(instance: Instance, rows: list[Entitlement]) -> list[dict[str, Any]]:
    """The items of one instance: one per active portal grant with a privilege live on the
    cluster, one per privilege found on the cluster that the portal did not grant."""
    # A live row explained by a grant names the grant's request (entitlements' _explain): the key.
    grants = {(g.request_id, g.role, g.database, g.schema): g
              for g in Grant.objects.filter(instance=instance, revoked_at__isnull=True, request__isnull=False)
              .select_related("team", "request__requester").prefetch_related("request__approvals__reviewer")}
    roles = {r.name: r for r in ManagedRole.objects.filter(instance=instance, dropped_at__isnull=True)
             .select_related("request__requester")}
    schemas = {(s.database, s.name): s for s in ManagedSchema.objects.filter(instance=instance)}
    drift = _drift_by_instance(instance)
    items: list[dict[str, Any]] = []
    seen_grants: set[int] = set()
    for row in rows:
        if row.kind not in REVIEWED_KINDS or row.source in ("admin", "builtin") or row.role == "PUBLIC":
            continue
        if row.role == instance.admin_user:
            continue
        grant = grants.get((row.request_id, row.role, row.database, row.schema)) if row.source == "grant" else None
        if row.source == "grant" and grant is not None:
            if grant.pk in seen_grants:
                continue  # the grant's other rows (USAGE, future tables): one item per grant
            seen_grants.add(grant.pk)
        managed_role = roles.get(row.role)
        managed_schema = schemas.get((row.database, row.schema))
        if managed_schema is not None:
            owning_team_id = managed_schema.team_id
        elif managed_role is not None:
            owning_team_id = managed_role.team_id
        else:
            owning_team_id = grant.team_id if grant is not None else None
        holders = set()
        if grant is not None and grant.request is not None and grant.request.requester_id:
            holders.add(grant.request.requester.username)
        if managed_role is not None and managed_role.request is not None and managed_role.request.requester_id:
            holders.add(managed_role.request.requester.username)
        evidence: dict[str, Any] = {"source": "portal grant" if grant is not None else "outside the portal",
                                    "drift": drift.get((row.database, row.schema, row.role), [])}
        if grant is not None:
            evidence.update(_request_evidence(grant.request))
            evidence["granted_at"] = grant.granted_at.isoformat()
            evidence["expires_at"] = grant.expires_at.isoformat() if grant.expires_at else None
            privileges, tables, kind = list(grant.privileges), grant.tables, "grant"
        else:
            evidence["expires_at"] = None
            privileges, tables, kind = list(row.privileges), row.tables, row.kind
        items.append({"instance": instance, "database": row.database, "schema": row.schema, "role": row.role,
                      "kind": kind, "privileges": privileges, "tables": tables,
                      "source": "grant" if grant is not None else "outside", "grant": grant,
                      "owning_team_id": owning_team_id, "holders": sorted(holders), "evidence": evidence})
    return items


def campaign_open(*, user: Any, name: Any, scope: Any, deadline: Any, unanswered_action: Any,
                  fallback_certifier: Any, actor_ip: str | None = None, now: datetime | None = None
                  ) -> AccessReviewCampaign:
    """Open a campaign: snapshot the live entitlements in scope and assign each item a certifier."""
    if not is_reviewer(user):
        raise PolicyViolation("only security reviewers and platform admins open access reviews")
    now = now or timezone.now()
    name = _text(name, "name", limit=MAX_NAME)
    scope, instances, teams = _scope(scope)
    deadline = _deadline(deadline, now)
    if unanswered_action not in UnansweredAction.values:
        raise InvalidPayload.field("unanswered_action", f"one of: {', '.join(UnansweredAction.values)}")
    if not isinstance(fallback_certifier, User) or not fallback_certifier.is_active:
        raise InvalidPayload.field("fallback_certifier", "an active user")
    # Live catalogs, outside the transaction: reading a cluster must not hold portal locks.
    report = entitlements_for(instances=instances, now=now)
    by_instance: dict[str, list[Entitlement]] = defaultdict(list)
    for row in report.rows:
        by_instance[row.instance].append(row)
    drafts: list[dict[str, Any]] = []
    for instance in instances:
        if instance.name not in report.unreachable:
            drafts.extend(_items_of_instance(instance, by_instance.get(instance.name, [])))
    team_ids = {t.pk for t in teams}
    if team_ids:
        drafts = [d for d in drafts if d["owning_team_id"] in team_ids]
    leads = _leads_by_team({d["owning_team_id"] for d in drafts if d["owning_team_id"]})
    with transaction.atomic():
        campaign = AccessReviewCampaign.objects.create(
            name=name, scope=scope, deadline=deadline, unanswered_action=unanswered_action,
            fallback_certifier=fallback_certifier, opened_by=user, unreachable=report.unreachable)
        items = []
        for draft in drafts:
            certifier, reason = choose_certifier(owning_team_id=draft["owning_team_id"], holders=set(draft["holders"]),
                                                 leads=leads, fallback=fallback_certifier, opener=user)
            items.append(AccessReviewItem(campaign=campaign, certifier=certifier, certifier_reason=reason, **draft))
        AccessReviewItem.objects.bulk_create(items)
        certifiers = sorted({i.certifier.username for i in items if i.certifier is not None})
        record("review.campaign_opened", actor=user, actor_ip=actor_ip, object_type="access_review",
               object_id=campaign.pk, outcome="opened",
               details={"name": name, "scope": scope, "deadline": deadline.isoformat(),
                        "unanswered_action": unanswered_action, "fallback_certifier": fallback_certifier.username,
                        "items": len(items), "certifiers": certifiers,
                        "outside_portal": sum(1 for i in items if i.source == "outside"),
                        "unassigned": sum(1 for i in items if i.certifier is None),
                        "unreachable": report.unreachable})
        if not items:
            _close(campaign, now=now, reason="nothing to review")
    return campaign


# --- closing ----------------------------------------------------------------------------------


def _close(campaign: AccessReviewCampaign, *, now: datetime, reason: str) -> None:
    campaign.status, campaign.closed_at = CampaignStatus.CLOSED, now
    campaign.save(update_fields=["status", "closed_at"])
    items = AccessReviewItem.objects.filter(campaign=campaign)
    counts = {d: items.filter(decision=d).count() for d in CertificationDecision.values}
    record("review.campaign_closed", object_type="access_review", object_id=campaign.pk, outcome="closed",
           details={"reason": reason, "decisions": counts, "items": items.count(),
                    "automatic_revokes": items.filter(decision="revoke", decided_by__isnull=True).count()})


# --- evidence ---------------------------------------------------------------------------------


REPORT_FORMATS = ("csv", "pdf")


def campaign_report_export(*, campaign: AccessReviewCampaign, user: Any, format: str,
                           actor_ip: str | None = None) -> tuple[bytes, str, str]:
    """The campaign's report as (content, content type, file name); producing it is audited.
    Reviewers, auditors and platform admins (a certifier who is none of them reads their queue)."""
    if not (is_reviewer(user) or is_auditor(user)):
        raise PolicyViolation("reviewers, auditors and platform admins read access review reports")
    if format not in REPORT_FORMATS:
        raise InvalidPayload.field("format", "csv or pdf")
    if format == "csv":
        content, content_type = campaign_report_csv(campaign).encode(), "text/csv; charset=utf-8"
    else:
        content, content_type = campaign_report_pdf(campaign, author=user), "application/pdf"
    with transaction.atomic():
        record("review.report_exported", actor=user, actor_ip=actor_ip, object_type="access_review",
               object_id=campaign.pk, outcome="exported",
               details={"format": format, "bytes": len(content), "status": campaign.status})
    return content, content_type, f"access-review-{campaign.pk}.{format}"
