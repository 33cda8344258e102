"""Team writes by platform admins: create a team, add / change / remove members. Each one audited."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from guardian.shortcuts import remove_perm

from audit.services import record
from portal import outbound
from portal.choices import MembershipRole
from portal.errors import Conflict, InvalidPayload, PolicyViolation
from portal.models import Membership, Team
from portal.personas import is_admin
from portal.services.demo import membership_add

_TEAM_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def _require_admin(actor: Any) -> None:
    if not is_admin(actor):
        raise PolicyViolation("only platform admins manage teams")


def team_create(*, actor: Any, name: str, description: str = "", webhook_url: str = "",
                actor_ip: str | None = None) -> Team:
    _require_admin(actor)
    name = (name or "").strip()
    if not _TEAM_NAME.match(name):
        raise InvalidPayload.field("name", "lower-case letters, digits and '-', starting with a letter (max 63)")
    webhook_url = (webhook_url or "").strip()
    if webhook_url:
        webhook_check(webhook_url)
    with transaction.atomic():
        if Team.objects.filter(name=name).exists():
            raise InvalidPayload.field("name", "a team with this name exists")
        team = Team.objects.create(name=name, description=description.strip(), webhook_url=webhook_url)
        record("team.created", actor=actor, actor_ip=actor_ip, object_type="team", object_id=team.pk,
               outcome="created", details={"name": team.name, "description": team.description, "webhook": bool(team.webhook_url)})
    return team


def webhook_check(url: str, *, field: str = "webhook_url") -> None:
    """Refuse, naming `field`, a webhook URL the portal would not call (portal.outbound's rules).

    Checked when saved so that the admin hears of it at once; checked again at every send, since
    what the host resolves to may change in between.
    """
    reason = outbound.url_refusal(url)
    if reason:
        raise InvalidPayload.field(field, f"refused: {reason}")


def team_member_add(*, actor: Any, team: Team, username: str, role: str = MembershipRole.MEMBER,
                    actor_ip: str | None = None) -> Membership:
    """Add a user to a team, or change their role in it (member / lead)."""
    _require_admin(actor)
    if role not in MembershipRole.values:
        raise InvalidPayload.field("role", f"must be one of {', '.join(MembershipRole.values)}")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise InvalidPayload.field("username", "no such user")
    with transaction.atomic():
        previous = Membership.objects.select_for_update().filter(team=team, user=user).first()
        if previous is not None and previous.role == role:
            raise Conflict(f"{username} is already a {role} of {team.name}", errors={"username": ["already a member"]})
        if previous is not None and previous.role == MembershipRole.LEAD:
            remove_perm("portal.lead_team", user, team)
        membership = membership_add(user=user, team=team, role=role)
        action = "team.member_added" if previous is None else "team.member_changed"
        record(action, actor=actor, actor_ip=actor_ip, object_type="team", object_id=team.pk,
               details={"team": team.name, "user": user.username, "role": role,
                        "previous_role": previous.role if previous else None})
    return membership


def team_member_remove(*, actor: Any, team: Team, username: str, actor_ip: str | None = None) -> None:
    _require_admin(actor)
    with transaction.atomic():
        membership = (Membership.objects.select_for_update().select_related("user")
                      .filter(team=team, user__username=username).first())
        if membership is None:
            raise InvalidPayload.field("username", f"{username} is not in {team.name}")
        if membership.role == MembershipRole.LEAD:
            remove_perm("portal.lead_team", membership.user, team)
        membership.delete()
        record("team.member_removed", actor=actor, actor_ip=actor_ip, object_type="team", object_id=team.pk,
               outcome="removed", details={"team": team.name, "user": username, "role": membership.role})
