"""Change requests: preview, submit, and every transition of their lifecycle.

submitted → approved | rejected | cancelled; approved → queued (the outbox, same transaction)
→ running → applied | failed (the workers); failed → queued (retry by a reviewer or admin).
Each transition locks the request row (SELECT ... FOR UPDATE), so two reviewers approving at
the same instant produce exactly one transition, and writes its audit event in the same
transaction. Notifications go out after commit and never block the transition.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import structlog
from django.core.cache import cache
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.services import batched as audit_batched
from audit.services import record
from portal.choices import Decision, InstanceStatus, RequestStatus, RequestType
from portal.errors import Conflict, InvalidPayload, PolicyViolation, StalePlan
from portal.models import Approval, ChangeRequest, Instance, InstanceInventory, Team
from portal.notifications import notify_enqueue
from portal.personas import is_admin, is_reviewer, member_team_ids
from portal.risk import owner_team_id_for, risk_assess
from portal.selectors.approvals import (
    approval_tally,
    decision_check,
    decision_rules_forget,
    requirement_for,
    requirement_keep,
    requirement_of,
    with_decision_rules,
)
from portal.selectors.plan_context import InventorySlice, inventory_slice, lookups_for, plan_context_for
from portal.selectors.requests import request_history_load
from portal.services.names import names_check_free, names_release, names_reserve
from provisioning.ddl.facts import facts_for_review
from provisioning.dry_run import run as dry_run_plan
from provisioning.inventory import inventory_refresh
from provisioning.outbox import enqueue_apply
from provisioning.plans import PlanModule, hook, module_for, plan_hash, plan_text
from provisioning.plans.context import Lookups, PlanContext
from provisioning.replicas.base import ensure_writable

log = structlog.get_logger(__name__)

INVENTORY_MAX_AGE = timedelta(seconds=60)
INVENTORY_RETRY_AFTER = 30  # seconds
MAX_JUSTIFICATION = 5000
MAX_COMMENT = 5000
MAX_OVERRIDE_REASON = 1000


# --- preview and submit -----------------------------------------------------------------------


def _plan_module(request_type: str) -> PlanModule:
    if request_type not in RequestType.values:
        raise InvalidPayload.field("type", f"one of: {', '.join(RequestType.values)}")
    try:
        return module_for(request_type)
    except ImportError:
        raise InvalidPayload.field("type", f"{request_type} requests are not available yet") from None


def _check_requester(user: Any, team: Team, instance: Instance) -> None:
    if team.pk not in member_team_ids(user) and not is_admin(user):
        raise PolicyViolation(f"you are not a member of team {team}",
                              errors={"team": [f"you are not a member of team {team}"]})
    if instance.status == InstanceStatus.RETIRED:
        raise InvalidPayload.field("instance", "this instance is retired")


def inventory_ensure_fresh(instance: Instance, lookups: Lookups | None = None
                           ) -> InstanceInventory | InventorySlice | None:
    """Refresh the inventory when missing or older than a minute; a failure keeps the old one.
    Returns the row as it now stands (None: the instance has none). `lookups`: of a row not
    refreshed here, only the names a validation looks up (plan_context.inventory_slice: one
    indexed read, the same whatever the instance's size); a refreshed row comes whole."""
    inventory = InstanceInventory.objects.filter(instance=instance).first() if lookups is None \
        else inventory_slice(instance, lookups)
    if inventory is not None and inventory.refreshed_at is not None \
            and inventory.refreshed_at > timezone.now() - INVENTORY_MAX_AGE:
        return inventory
    # After a failed read, do not dial the instance again for a while: a live preview (one call
    # per keystroke) must not wait for a connect timeout each time.
    unreachable_key = f"inventory-unreachable:{instance.pk}"
    try:
        if cache.get(unreachable_key):
            return inventory
    except Exception:  # noqa: BLE001 - without the cache we simply try the instance
        pass
    try:
        return inventory_refresh(instance)
    except psycopg.Error as exc:
        log.warning("inventory.refresh_failed", instance=instance.pk, error=type(exc).__name__)
        try:
            cache.set(unreachable_key, 1, INVENTORY_RETRY_AFTER)
        except Exception:  # noqa: BLE001
            pass
        return inventory


def request_preview(*, user: Any, type: str, instance: Instance, team: Team, payload: Any,
                    check_names: bool = True) -> dict:
    """The plan, its hash, risk and who must approve: exactly what a submit would store. No writes
    to the portal's records (the inventory cache may be refreshed). check_names=False: the caller
    claims the names itself (request_submit), which answers the same 409 without this read."""
    module = _plan_module(type)
    _check_requester(user, team, instance)
    if type != RequestType.REPLICA:
        # A read replica takes no writes: 400 on "instance" before anything reads its inventory.
        ensure_writable(instance)
    fresh = {}
    # Only the role(s), schema and database the payload names are read (the instance's size does
    # not matter); the plan's lookups hook says which, and its context refuses any other lookup.
    lookups = lookups_for(type, payload)
    if type in (RequestType.SCHEMA, RequestType.ROLE, RequestType.GRANT, RequestType.REVOKE):
        # Handed to the context so the row just read or refreshed is not read again.
        fresh["inventory"] = inventory_ensure_fresh(instance, lookups)
    ctx = plan_context_for(instance, team, user, request_type=type, lookups=lookups, **fresh)
    validated = module.validate(payload, ctx)
    # Review-rule findings (DDL: provisioning/ddl/rules.py) feed the risk; error findings are a 400.
    findings = plan_review(module, validated, ctx, instance)
    if check_names:
        # 409 when another open request claims a name this one creates (the submit's insert decides).
        names_check_free(instance=instance, request_type=type, payload=validated)
    steps = module.render(validated, ctx)
    plan = plan_text(steps)
    owner_team_id = owner_team_id_for(request_type=type, payload=validated, instance=instance)
    risk, reasons = risk_assess(request_type=type, payload=validated, environment=instance.environment,
                                team_id=team.pk, owner_team_id=owner_team_id, findings=findings)
    owner_team = Team.objects.get(pk=owner_team_id) if owner_team_id else None
    requirement = requirement_for(environment=instance.environment, request_type=type, risk=risk, team=team,
                                  owner_team=owner_team)
    return {
        "plan": plan,
        "plan_hash": plan_hash(plan),
        "risk": risk,
        "risk_reasons": reasons,
        **requirement.as_dict(),
        "auto_approve": requirement.auto_approve,
        "findings": findings,
        "payload": validated,
        "database": module.database(validated),
        "owner_team_id": owner_team_id,
        # For request_submit, which keeps them on the new row (its response reads them again).
        "owner_team_row": owner_team,
        "requirement": requirement,
        "plan_context": ctx,
    }


def plan_review(module: PlanModule, validated: dict, ctx: PlanContext, instance: Instance) -> list[dict]:
    """The findings of a plan with the `review` hook (none otherwise). The table facts it judges by
    are read here, from the cluster, not by the plan (which does no I/O)."""
    review = hook(module, "review")
    if review is None:
        return []
    facts, facts_error = facts_for_review(instance, module.facts_wanted(validated))
    return review(validated, ctx, facts=facts, facts_error=facts_error)["findings"]


RESUBMITTABLE = (RequestStatus.FAILED, RequestStatus.REJECTED)


def resubmit_check(*, user: Any, original: ChangeRequest, type: str | None = None) -> None:
    """A failed or rejected request may be filed again ("edit and resubmit", #19) by its requester
    or a member of its team, as a new request of the same type; anything else is a 400 naming
    resubmit_of. The caller has loaded `original` through request_get_for (out of scope: 404)."""
    if original.status not in RESUBMITTABLE:
        raise InvalidPayload.field("resubmit_of", f"request #{original.pk} is {original.status}; only a failed "
                                                  "or rejected request can be edited and resubmitted")
    if type is not None and type != original.type:
        raise InvalidPayload.field("resubmit_of", f"request #{original.pk} is a {original.type} request, not {type}")
    if original.requester_id != user.pk and not user.memberships.filter(team_id=original.team_id).exists():
        raise InvalidPayload.field("resubmit_of", f"request #{original.pk} is not yours or your team's")


def resubmit_allowed(user: Any, original: ChangeRequest) -> bool:
    """Whether the request page offers "Edit and resubmit" to this user."""
    try:
        resubmit_check(user=user, original=original)
    except InvalidPayload:
        return False
    return True


PREVIEW_DRY_RUN_SECONDS = 30


def preview_dry_run(preview: dict, *, type: str, instance: Instance, team: Team, reuse: bool = False) -> dict | None:
    """The DDL dry run of a previewed plan (dev and staging; None where none applies): the live
    preview shows it as the requester types (#19), and request_submit runs it again at submit.
    It runs over the team's executor login, bounded and rolled back (provisioning/dry_run.py);
    nothing is committed on the target and nothing is recorded in the portal: the one audited dry
    run (ddl.dry_run) is the submit's, the one reviewers see.

    reuse=True (the preview): the result for the same instance, team and plan is kept
    PREVIEW_DRY_RUN_SECONDS, so typing the justification does not run the SQL again; a submit
    always runs it afresh."""
    wanted = hook(_plan_module(type), "dry_run")
    if wanted is None or not wanted(preview["plan_context"]):
        return None
    key = f"portal:preview-dry-run:{instance.pk}:{team.pk}:{preview['plan_hash']}"
    if reuse:
        kept = cache.get(key)
        if kept is not None:
            return kept
    result = dry_run_plan(instance, team, preview["payload"])
    if reuse:
        cache.set(key, result, PREVIEW_DRY_RUN_SECONDS)
    return result


def _check_override(reason: Any) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise InvalidPayload.field("dry_run_override", "must be text")
    reason = reason.strip()
    if len(reason) > MAX_OVERRIDE_REASON:
        raise InvalidPayload.field("dry_run_override", f"at most {MAX_OVERRIDE_REASON} characters")
    return reason


def _dry_run_refusal(dry_run: dict) -> str:
    where = f" at statement {dry_run['statement_index']}" if dry_run.get("statement_index") else ""
    return (f"the dry run failed{where}: {dry_run.get('error') or 'no detail'}. Fix the SQL, or give a reason "
            "to send it to the reviewers anyway")


def request_submit(*, user: Any, actor_ip: str | None, type: str, instance: Instance, team: Team,
                   justification: str, payload: Any, resubmit_of: ChangeRequest | None = None,
                   dry_run_override: str = "") -> ChangeRequest:
    """Submit a request. A DDL plan whose dry run fails (dev and staging) is refused with a 400 on
    `dry_run_override` unless the requester gives a reason there: the reason and who gave it are
    kept on the request (dry_run["override"]) and in its request.submitted event, and the failure
    is marked for reviewers (queue row, status card, approve dialog)."""
    justification = (justification or "").strip() if isinstance(justification, str) else ""
    if not justification:
        raise InvalidPayload.field("justification", "say why this change is needed")
    if len(justification) > MAX_JUSTIFICATION:
        raise InvalidPayload.field("justification", f"at most {MAX_JUSTIFICATION} characters")
    if resubmit_of is not None:
        resubmit_check(user=user, original=resubmit_of, type=type)
    override = _check_override(dry_run_override)
    preview = request_preview(user=user, type=type, instance=instance, team=team, payload=payload,
                              check_names=False)
    validated = preview["payload"]
    expires_at = parse_datetime(validated["expires_at"]) if validated.get("expires_at") else None
    # DDL on dev / staging: the plan runs and is rolled back now, outside the portal transaction
    # (bounded by its own short timeouts); the result is shown to the reviewer.
    dry_run = preview_dry_run(preview, type=type, instance=instance, team=team)
    if dry_run is not None and not dry_run["ok"]:
        if not override:
            raise InvalidPayload.field("dry_run_override", _dry_run_refusal(dry_run))
        dry_run = {**dry_run, "override": {"reason": override, "by": user.username}}
    with transaction.atomic(), audit_batched():
        request = ChangeRequest.objects.create(
            type=type, instance=instance, team=team, requester=user, justification=justification,
            payload=validated, plan=preview["plan"], plan_hash=preview["plan_hash"], risk=preview["risk"],
            risk_reasons=preview["risk_reasons"], findings=preview["findings"], dry_run=dry_run, expires_at=expires_at,
            submitted_ip=actor_ip or None, owner_team=preview["owner_team_row"], resubmit_of=resubmit_of,
        )
        requirement_keep(request, preview["requirement"])
        names_reserve(request)  # a unique violation here is the 409 of a submit racing this one
        if dry_run is not None:
            # Each dry run is audited with the SQL it ran and how it ended (never the server's text).
            _audit(request, "ddl.dry_run", actor=user, actor_ip=actor_ip,
                   outcome="success" if dry_run["ok"] else "failure",
                   details={"plan": request.plan, "sqlstate": dry_run.get("sqlstate", ""),
                            "statement_index": dry_run.get("statement_index"), "error": dry_run.get("error", ""),
                            "ms": dry_run.get("ms")})
        _audit(request, "request.submitted", actor=user, actor_ip=actor_ip, outcome=RequestStatus.SUBMITTED,
               details={"type": type, "team": team.name, "risk": request.risk, "plan_hash": request.plan_hash,
                        "plan": request.plan,
                        **({"resubmit_of": resubmit_of.pk} if resubmit_of is not None else {}),
                        **({"dry_run_failed": True, "dry_run_override": dry_run["override"]["reason"]}
                           if dry_run is not None and "override" in dry_run else {})})
        _notify_on_commit(request, "submitted")
        if preview["auto_approve"]:
            # Policy allows it (low-risk dev only): the portal approves as `system`.
            _approve_and_queue(request, approvers=[], actor=None, actor_ip=None, auto=True)
    return request


# --- decisions --------------------------------------------------------------------------------


def _locked(request: ChangeRequest | int, *, decider: Any = None, scope: Any = None) -> ChangeRequest:
    """The request re-read and locked; with `decider`, carrying whether each decision rule holds for
    them (selectors.approvals.with_decision_rules: in the same SELECT, no query of its own); with
    `scope`, only among the requests that user sees (Http404 otherwise, as request_get_for)."""
    rows = ChangeRequest.objects.restrict(scope, "view") if scope is not None else ChangeRequest.objects
    rows = rows.select_for_update(of=("self",)).select_related("instance", "team", "owner_team", "requester",
                                                               "filed_by")
    if decider is not None:
        rows = with_decision_rules(rows, decider)
    try:
        return rows.get(pk=request if isinstance(request, int) else request.pk)
    except ChangeRequest.DoesNotExist:
        if scope is None:
            raise
        raise Http404("no such request") from None


def _check_comment(comment: Any) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise InvalidPayload.field("comment", "must be text")
    if len(comment) > MAX_COMMENT:
        raise InvalidPayload.field("comment", f"at most {MAX_COMMENT} characters")
    return comment.strip()


def _check_plan_intact(request: ChangeRequest) -> None:
    # The hash approvals bind to must still be the hash of the stored plan text.
    if plan_hash(request.plan) != request.plan_hash:
        raise StalePlan("the stored plan does not match its hash; submit the request again")


def _decide(request: ChangeRequest, reviewer: Any, decision: str, comment: str) -> ChangeRequest:
    decision_check(reviewer, request)  # PolicyViolation (403) or Conflict (409)
    _check_plan_intact(request)
    Approval.objects.create(request=request, reviewer=reviewer, decision=decision, comment=comment,
                            plan_hash=request.plan_hash)
    decision_rules_forget(request)  # they held before this decision; the answer asks again
    return request


def request_approve(*, request: ChangeRequest | int, reviewer: Any, comment: str, actor_ip: str | None = None
                    ) -> ChangeRequest:
    """Approve as `reviewer`; the request is approved and queued when this approval completes its
    policy. `request` may be given by id (the API): the lock then reads it within the reviewer's
    scope (Http404 outside it), so the row is read once, not once to check and once to lock.
    The request returned carries its approvals and (no) executions: an answer needs no more reads."""
    comment = _check_comment(comment)
    # One append for the approval's events (approval or approved, queued), at the end.
    with transaction.atomic(), audit_batched():
        request = _locked(request, decider=reviewer, scope=reviewer if isinstance(request, int) else None)
        _decide(request, reviewer, Decision.APPROVE, comment)
        # Its approvals, this one included: the tally counts them and the answer lists them (one
        # query for both). It was waiting for a decision, so it was never queued and never ran.
        request_history_load(request, never_ran=True)
        requirement = requirement_of(request)
        tally = approval_tally(request, requirement, viewer=reviewer)
        decision = {"comment": comment, "plan_hash": request.plan_hash, "approvals": tally.group_approvals,
                    "approvals_required": requirement.approvals_required,
                    "owner_lead_approved": tally.lead_approved, **requirement.as_dict()}
        if tally.satisfied:
            # One decision, one event: the approval that completes the policy is `request.approved`.
            _approve_and_queue(request, approvers=tally.approvers, actor=reviewer, actor_ip=actor_ip,
                               decision=decision)
        else:
            _audit(request, "request.approval", actor=reviewer, actor_ip=actor_ip, approvers=tally.approvers,
                   outcome=Decision.APPROVE, details=decision)
    return request


def _approve_and_queue(request: ChangeRequest, *, approvers: list[str], actor: Any, actor_ip: str | None,
                       auto: bool = False, decision: dict | None = None) -> None:
    """submitted → approved → queued, with the outbox row, in the caller's transaction (which holds
    the row: it has just inserted or locked it); `decision`: the details of the reviewer's approval
    that completed the policy (one event records both)."""
    request.status = RequestStatus.APPROVED
    request.approved_at = timezone.now()
    _audit(request, "request.approved", actor=actor, actor_ip=actor_ip, approvers=approvers,
           outcome=RequestStatus.APPROVED,
           details={**(decision or {}), "plan_hash": request.plan_hash, "auto_approved": auto})
    _notify_on_commit(request, "approved")
    # submitted → queued with approved_at in one UPDATE (approved is the state between the two
    # events, which nothing outside this transaction could ever see); writes request.queued and
    # the outbox row.
    enqueue_apply(request, approved_at=request.approved_at)


def request_reject(*, request: ChangeRequest, reviewer: Any, comment: str, actor_ip: str | None = None
                   ) -> ChangeRequest:
    comment = _check_comment(comment)
    if not comment:
        raise InvalidPayload.field("comment", "say why the request is rejected")
    with transaction.atomic():
        request = _locked(request, decider=reviewer)
        _decide(request, reviewer, Decision.REJECT, comment)
        request.status = RequestStatus.REJECTED
        request.status_detail = comment
        request.save(update_fields=["status", "status_detail", "updated_at"])
        names_release([request])
        _audit(request, "request.rejected", actor=reviewer, actor_ip=actor_ip, approvers=[],
               outcome=RequestStatus.REJECTED, details={"comment": comment, "plan_hash": request.plan_hash})
        _notify_on_commit(request, "rejected")
    return request


def request_cancel(*, request: ChangeRequest, user: Any, comment: str = "", actor_ip: str | None = None
                   ) -> ChangeRequest:
    comment = _check_comment(comment)
    with transaction.atomic():
        request = _locked(request)
        if request.requester_id != user.pk:
            raise PolicyViolation("only the requester may cancel a request")
        if request.status != RequestStatus.SUBMITTED:
            raise Conflict(f"a {request.status} request cannot be cancelled")
        request.status = RequestStatus.CANCELLED
        request.status_detail = comment
        request.save(update_fields=["status", "status_detail", "updated_at"])
        names_release([request])
        _audit(request, "request.cancelled", actor=user, actor_ip=actor_ip, outcome=RequestStatus.CANCELLED,
               details={"comment": comment})
        _notify_on_commit(request, "cancelled")
    return request


def request_retry(*, request: ChangeRequest, user: Any, comment: str = "", actor_ip: str | None = None
                  ) -> ChangeRequest:
    comment = _check_comment(comment)
    with transaction.atomic(), audit_batched():
        request = _locked(request)
        if not is_reviewer(user):
            raise PolicyViolation("only reviewers and platform admins may retry a request")
        if request.status != RequestStatus.FAILED:
            raise Conflict(f"a {request.status} request cannot be retried; only failed ones can")
        _check_plan_intact(request)
        names_reserve(request, renew=True)  # released when it failed: 409 if another request took one since
        _audit(request, "request.retried", actor=user, actor_ip=actor_ip, outcome=RequestStatus.QUEUED,
               details={"comment": comment, "plan_hash": request.plan_hash, "previous_error": request.status_detail})
        enqueue_apply(request)  # failed → queued
        _notify_on_commit(request, "retried")
    return request


# --- audit and notifications ------------------------------------------------------------------


def _audit(request: ChangeRequest, action: str, *, actor: Any, actor_ip: str | None, outcome: str = "",
           approvers: list[str] | None = None, details: dict | None = None) -> None:
    database = request.payload.get("database", "") if isinstance(request.payload, dict) else ""
    record(action, actor=actor, actor_ip=actor_ip, object_type="request", object_id=request.pk,
           instance=request.instance, database=database or "", request_id=request.pk, approvers=approvers,
           outcome=str(outcome), details=details)


def _notify_on_commit(request: ChangeRequest, event: str) -> None:
    request_id = request.pk
    transaction.on_commit(lambda: notify_enqueue(request_id, event))
