"""Filing and deciding change sets (access as code; portal/selectors/desired_state.py).

Who can do what:
- `change_set_apply`: a member of the document's team (the selector refuses other teams), for an
  instance they can see. Each request is submitted exactly as `POST /api/v1/requests/` would
  (same validation, plans, policies, name reservations, audit); all of them or none: the first
  refused entry rolls the whole set back and the 400 names it (`changes[2].payload.role`).
  Concurrent applies of the same team serialise on the team row, so two CI jobs racing with the
  same file file it once.
- `change_set_approve` / `change_set_reject`: a reviewer decides every open request of the set at
  once; each decision is the ordinary per-request one (its own approval bound to its plan hash,
  its own audit event), all or none: a request the reviewer may not decide (their own, for one)
  refuses the whole decision with that request named.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import transaction

from audit.services import record
from portal.choices import RequestStatus
from portal.errors import Conflict, DomainError, InvalidPayload
from portal.models import ChangeSet, ChangeSetItem, Team
from portal.selectors.desired_state import Change, diff, parse
from portal.services.requests import request_approve, request_reject, request_submit

MAX_SOURCE = 200


def change_set_plan(*, user: Any, document: Any) -> list[Change]:
    return diff(parse(user, document))


def change_set_apply(*, user: Any, document: Any, justification: str, source: str = "",
                     actor_ip: str | None = None) -> tuple[ChangeSet | None, list[Change]]:
    """File the document's changes as one change set; (None, changes) when there is nothing to file."""
    if not isinstance(source, str) or len(source) > MAX_SOURCE:
        raise InvalidPayload.field("source", f"a file name of at most {MAX_SOURCE} characters")
    desired = parse(user, document)
    with transaction.atomic():
        # One apply per team at a time: the second sees the first's requests as already asked for.
        Team.objects.select_for_update().filter(pk=desired.team.pk).first()
        changes = diff(desired)
        to_file = [change for change in changes if change.op in ("add", "remove")]
        if not to_file:
            return None, changes
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
        change_set = ChangeSet.objects.create(
            team=desired.team, instance=desired.instance, created_by=user, justification=justification or "",
            source=source, document_sha256=hashlib.sha256(canonical.encode()).hexdigest(), document=document)
        for position, change in enumerate(to_file):
            try:
                request = request_submit(user=user, actor_ip=actor_ip, type=change.type, instance=desired.instance,
                                         team=desired.team, justification=justification, payload=change.payload)
            except DomainError as exc:
                # Name the entry: `changes[2].payload.role`, and roll the whole set back.
                errors = {f"changes[{position}].{name}": messages for name, messages in exc.errors.items()} or {
                    f"changes[{position}]": [exc.detail]}
                raise type(exc)(f"changes[{position}] ({change.op} {change.type}): {exc.detail}",
                                errors=errors) from exc
            ChangeSetItem.objects.create(change_set=change_set, request=request, position=position, op=change.op)
        record("change_set.filed", actor=user, actor_ip=actor_ip, object_type="change_set", object_id=change_set.pk,
               instance=desired.instance, outcome="ok",
               details={"team": desired.team.name, "source": source, "document_sha256": change_set.document_sha256,
                        "requests": list(change_set.items.values_list("request_id", flat=True))})
    return change_set, changes


def _decide_all(change_set: ChangeSet, decide, *, reviewer: Any, comment: str, actor_ip: str | None) -> ChangeSet:
    with transaction.atomic():
        items = list(change_set.items.select_related("request").order_by("position"))
        open_items = [item for item in items if item.request.status == RequestStatus.SUBMITTED]
        if not open_items:
            raise Conflict("no request of this change set is waiting for a decision")
        for item in open_items:
            try:
                decide(request=item.request, reviewer=reviewer, comment=comment, actor_ip=actor_ip)
            except DomainError as exc:
                raise type(exc)(f"request #{item.request_id}: {exc.detail}",
                                errors={f"requests.{item.request_id}": [exc.detail]}) from exc
    return change_set


def change_set_approve(*, change_set: ChangeSet, reviewer: Any, comment: str, actor_ip: str | None = None
                       ) -> ChangeSet:
    return _decide_all(change_set, request_approve, reviewer=reviewer, comment=comment, actor_ip=actor_ip)


def change_set_reject(*, change_set: ChangeSet, reviewer: Any, comment: str, actor_ip: str | None = None
                      ) -> ChangeSet:
    return _decide_all(change_set, request_reject, reviewer=reviewer, comment=comment, actor_ip=actor_ip)
