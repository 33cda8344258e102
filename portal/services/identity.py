"""Single sign-on's rules: identity-provider groups mapped to teams and personas, and what one
sign-in through the provider changes (docs/identity.md).

Who may do what:
- group mappings are created, changed and deleted by platform admins only (the page and the API
  check the persona, and so does every function here); each change is one audited event
  (`identity.mapping_created`, `identity.mapping_changed`, `identity.mapping_deleted`);
- `PORTAL_OIDC_GROUP_MAP` names a JSON file that fills an empty mapping table (bootstrapping),
  loaded by the portal itself (actor `system`) at the first sign-in or by
  `manage.py identity_group_map`; a bad entry refuses the whole file, naming the entry;
- `oidc_sign_in` runs as the portal for the user the provider vouched for: it creates the user
  on first sign-in, sets their memberships of the mapped teams and their mapped personas to what
  their groups say (each change audited: `team.member_added` / `_changed` / `_removed`,
  `identity.persona_added` / `_removed`), and refuses a user in no mapped group: one the portal
  knew is deactivated and offboarded (portal/services/offboarding.py).

Teams and personas no mapping names are left alone: they stay managed by hand on the Teams page.
Local accounts (without an IdentityLink) are never touched by a sign-in through the provider.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from guardian.shortcuts import remove_perm

from audit.services import record
from portal.choices import MembershipRole, Persona
from portal.crypto import decrypt, encrypt
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import GroupMapping, IdentityLink, Membership, Team
from portal.personas import is_admin
from portal.services import oidc
from portal.services.demo import membership_add
from portal.services.offboarding import offboard

MAX_GROUP = 200
MAX_GROUPS_CLAIM = 1000  # groups presented at one sign-in; more is refused, not truncated
_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class SignInRefused(PolicyViolation):
    """The provider vouched for the user, the portal does not let them in. `reason` is audited
    and shown on the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- mappings: platform admins -------------------------------------------------------------------

def _require_admin(actor: Any) -> None:
    if not is_admin(actor):
        raise PolicyViolation("only platform admins manage group mappings")


def _clean(*, group: Any, team: Any, team_role: Any, persona: Any, prefix: str = "") -> dict:
    """A mapping's fields checked (raises InvalidPayload naming the field, after `prefix`)."""
    def bad(name: str, message: str) -> InvalidPayload:
        return InvalidPayload.field(f"{prefix}{name}", message)

    if not isinstance(group, str) or not group.strip() or len(group.strip()) > MAX_GROUP:
        raise bad("group", f"the group's name as the provider sends it (1-{MAX_GROUP} characters)")
    if any(ord(c) < 32 for c in group):
        raise bad("group", "control characters are not allowed")
    team = team or None
    team_role = team_role or ""
    persona = persona or ""
    if (team is None) == (not persona):
        raise bad("team", "map the group to a team or to a persona (exactly one)")
    if team is not None:
        if isinstance(team, Team):
            team_obj = team
        elif isinstance(team, str):
            team_obj = Team.objects.filter(name=team).first()
            if team_obj is None:
                raise bad("team", f"no team named {team!r}")
        else:
            raise bad("team", "a team's name")
        team_role = team_role or MembershipRole.MEMBER
        if team_role not in MembershipRole.values:
            raise bad("role", f"must be one of {', '.join(MembershipRole.values)}")
        return {"group": group.strip(), "team": team_obj, "team_role": team_role, "persona": ""}
    if team_role:
        raise bad("role", "a role applies to a team mapping only")
    if persona not in Persona.values:
        raise bad("persona", f"must be one of {', '.join(Persona.values)}")
    return {"group": group.strip(), "team": None, "team_role": "", "persona": persona}


def _check_unique(fields: dict, *, exclude: int | None = None, prefix: str = "") -> None:
    same = GroupMapping.objects.filter(group=fields["group"])
    same = same.filter(team=fields["team"]) if fields["team"] else same.filter(persona=fields["persona"])
    if exclude is not None:
        same = same.exclude(pk=exclude)
    if same.exists():
        raise InvalidPayload.field(f"{prefix}group", "this group is already mapped to that target")


def mapping_details(mapping: GroupMapping) -> dict:
    return {"group": mapping.group, "team": mapping.team.name if mapping.team_id else None,
            "role": mapping.team_role or None, "persona": mapping.persona or None}


def mapping_create(*, actor: Any, group: Any, team: Any = None, team_role: Any = "", persona: Any = "",
                   actor_ip: str | None = None) -> GroupMapping:
    _require_admin(actor)
    fields = _clean(group=group, team=team, team_role=team_role, persona=persona)
    with transaction.atomic():
        _check_unique(fields)
        mapping = GroupMapping.objects.create(**fields)
        record("identity.mapping_created", actor=actor, actor_ip=actor_ip, object_type="group_mapping",
               object_id=mapping.pk, outcome="created", details=mapping_details(mapping))
    return mapping


def mapping_update(*, actor: Any, mapping: GroupMapping, group: Any, team: Any = None, team_role: Any = "",
                   persona: Any = "", actor_ip: str | None = None) -> GroupMapping:
    _require_admin(actor)
    fields = _clean(group=group, team=team, team_role=team_role, persona=persona)
    with transaction.atomic():
        locked = GroupMapping.objects.select_for_update().get(pk=mapping.pk)
        before = mapping_details(locked)
        _check_unique(fields, exclude=locked.pk)
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save()
        after = mapping_details(locked)
        if after != before:
            record("identity.mapping_changed", actor=actor, actor_ip=actor_ip, object_type="group_mapping",
                   object_id=locked.pk, outcome="changed", details={"before": before, "after": after})
    return locked


def mapping_delete(*, actor: Any, mapping: GroupMapping, actor_ip: str | None = None) -> None:
    _require_admin(actor)
    with transaction.atomic():
        locked = GroupMapping.objects.select_for_update(of=("self",)).select_related("team").filter(pk=mapping.pk).first()
        if locked is None:
            return
        details = mapping_details(locked)
        pk = locked.pk
        locked.delete()
        record("identity.mapping_deleted", actor=actor, actor_ip=actor_ip, object_type="group_mapping",
               object_id=pk, outcome="deleted", details=details)


# --- the bootstrap file ---------------------------------------------------------------------------

def mapping_file_entries(path: Path) -> list[dict]:
    """The entries of a group-map file, each checked; InvalidPayload names the first bad one
    (`entry 3 (group 'db-x'): team: no team named 'x'`)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidPayload(f"PORTAL_OIDC_GROUP_MAP: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidPayload(f"PORTAL_OIDC_GROUP_MAP: {path} is not JSON: {exc}") from None
    entries = data.get("mappings") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InvalidPayload('PORTAL_OIDC_GROUP_MAP: expected a list of entries, or {"mappings": [...]}')
    cleaned: list[dict] = []
    seen: set[tuple] = set()
    for index, entry in enumerate(entries, start=1):
        label = f"entry {index}"
        if not isinstance(entry, dict):
            raise InvalidPayload(f"PORTAL_OIDC_GROUP_MAP: {label}: an object with group and team or persona")
        if isinstance(entry.get("group"), str):
            label += f" (group {entry['group']!r})"
        unknown = set(entry) - {"group", "team", "role", "persona"}
        if unknown:
            raise InvalidPayload(f"PORTAL_OIDC_GROUP_MAP: {label}: unknown keys {', '.join(sorted(unknown))}")
        try:
            fields = _clean(group=entry.get("group"), team=entry.get("team"), team_role=entry.get("role"),
                            persona=entry.get("persona"))
        except InvalidPayload as exc:
            raise InvalidPayload(f"PORTAL_OIDC_GROUP_MAP: {label}: {exc.detail}") from None
        key = (fields["group"], fields["team"].pk if fields["team"] else None, fields["persona"])
        if key in seen:
            raise InvalidPayload(f"PORTAL_OIDC_GROUP_MAP: {label}: the same mapping is listed twice")
        seen.add(key)
        cleaned.append(fields)
    return cleaned


def mapping_bootstrap(path: Path | None = None) -> int:
    """Fill an empty mapping table from the group-map file (the portal as actor). Returns how many
    mappings it created: 0 when the table has rows already (the admins' edits win) or no file is set."""
    path = path or settings.OIDC_GROUP_MAP
    if not path:
        return 0
    with transaction.atomic():
        # One loader at a time: two first sign-ins at once must not load the file twice.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ["dbportal.identity.group_map"])
        if GroupMapping.objects.exists():
            return 0
        entries = mapping_file_entries(path)
        for fields in entries:
            mapping = GroupMapping.objects.create(**fields)
            record("identity.mapping_created", actor=None, object_type="group_mapping", object_id=mapping.pk,
                   outcome="created", details={**mapping_details(mapping), "source": str(path)})
    return len(entries)


# --- a sign-in through the provider -----------------------------------------------------------------

@dataclass
class SignInResult:
    user: Any
    created: bool
    changes: list[str]


def _claim_groups(claims: dict) -> list[str]:
    raw = claims.get(settings.OIDC_GROUPS_CLAIM, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or len(raw) > MAX_GROUPS_CLAIM or not all(isinstance(g, str) for g in raw):
        raise SignInRefused(f"the {settings.OIDC_GROUPS_CLAIM!r} claim is not a list of at most "
                            f"{MAX_GROUPS_CLAIM} group names")
    return sorted({g for g in raw if 0 < len(g) <= MAX_GROUP})


def _username_for(claims: dict) -> str:
    for name in ("preferred_username", "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            username = _USERNAME_UNSAFE.sub("_", value.strip())[:150]
            if username:
                return username
    raise SignInRefused("the provider sent no usable name")


def _refuse(*, reason: str, actor: Any, ip: str | None, details: dict, user: Any = None) -> SignInRefused:
    record("auth.login_failed", actor=actor, actor_ip=ip, object_type="user",
           object_id=user.pk if user is not None else "", outcome="refused",
           details={"channel": "oidc", "reason": reason, **details})
    return SignInRefused(reason)


def oidc_sign_in(*, claims: dict, issuer: str, actor_ip: str | None = None, refresh_token: str = "") -> SignInResult:
    """The portal user for verified ID-token `claims`, their teams and personas set from their
    groups; raises SignInRefused (audited, committed with what it caused) when they may not sign in.
    Runs as the portal."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        with transaction.atomic():
            refusal = _refuse(reason="the ID token has no usable subject", actor="anonymous", ip=actor_ip, details={})
        raise refusal
    mapping_bootstrap()
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                try:
                    outcome = _sign_in(claims=claims, issuer=issuer, subject=subject, ip=actor_ip,
                                       refresh_token=refresh_token)
                except SignInRefused as exc:  # a claim the portal cannot use: refused before any change
                    outcome = _refuse(reason=exc.reason, actor=subject[:150], ip=actor_ip,
                                      details={"subject": subject})
            break
        except IntegrityError:
            # Two first sign-ins of one person at once (two tabs): the other created the user and
            # its link; the second attempt finds them.
            if attempt == 2:
                raise
    if isinstance(outcome, SignInRefused):
        raise outcome
    return outcome


def _sign_in(*, claims: dict, issuer: str, subject: str, ip: str | None,
             refresh_token: str) -> SignInResult | SignInRefused:
    groups = _claim_groups(claims)
    link = (IdentityLink.objects.select_for_update().select_related("user")
            .filter(issuer=issuer, subject=subject).first())
    mappings = list(GroupMapping.objects.select_related("team").filter(group__in=groups))
    mapped_groups = sorted({m.group for m in mappings})
    seen = {"subject": subject, "groups": groups[:50]}
    created = False
    if link is None:
        if not mappings:
            return _refuse(reason="not in any group mapped to the portal", actor=_username_for(claims), ip=ip,
                           details=seen)
        user, refusal = _user_create(claims=claims, issuer=issuer, subject=subject, ip=ip, seen=seen)
        if refusal is not None:
            return refusal
        link, created = user.identity_link, True
    user = link.user
    if not user.is_active:
        return _refuse(reason="the account is deactivated", actor=user.username, ip=ip, details=seen, user=user)
    if not mappings:
        reason = "the identity provider no longer lists the user in any mapped group"
        offboard(user, actor=None, reason=reason, actor_ip=ip)
        return _refuse(reason=reason, actor=user.username, ip=ip, details=seen, user=user)
    changes = _apply_mappings(user=user, mappings=mappings, ip=ip, groups=mapped_groups)
    link.groups = groups
    link.last_sign_in = link.checked_at = timezone.now()
    # Kept only for the periodic check, encrypted; without it a stale one is dropped.
    link.refresh_token_encrypted = encrypt(refresh_token) if refresh_token and settings.OIDC_CHECK_MINUTES else ""
    link.save(update_fields=["groups", "last_sign_in", "checked_at", "refresh_token_encrypted"])
    _profile_update(user, claims)
    record("auth.login", actor=user, actor_ip=ip, object_type="user", object_id=user.pk, outcome="ok",
           details={"channel": "oidc", "issuer": issuer, "subject": subject, "mapped_groups": mapped_groups})
    return SignInResult(user=user, created=created, changes=changes)


def _user_create(*, claims: dict, issuer: str, subject: str, ip: str | None, seen: dict):
    """(user, None) for a first sign-in, or (None, refusal) when the name is a local account's."""
    user_model = get_user_model()
    username = _username_for(claims)
    existing = user_model.objects.select_for_update().filter(username=username).first()
    if existing is not None:
        # Never take over another account by its name: a local one (the break-glass admin, a demo
        # persona) or another subject's (a name reused at the provider).
        return None, _refuse(reason=f"the name {username!r} belongs to another account", actor=username,
                             ip=ip, details=seen, user=existing)
    user = user_model(username=username)
    user.set_unusable_password()
    _profile_fill(user, claims)
    user.save()
    IdentityLink.objects.create(user=user, issuer=issuer, subject=subject)
    record("identity.user_created", actor=None, actor_ip=ip, object_type="user", object_id=user.pk,
           outcome="created", details={"username": username, "issuer": issuer, "subject": subject})
    return user, None


def _profile_fill(user: Any, claims: dict) -> None:
    email = claims.get("email")
    if isinstance(email, str) and len(email) <= 254 and "@" in email:
        user.email = email
    for field, claim in (("first_name", "given_name"), ("last_name", "family_name")):
        value = claims.get(claim)
        if isinstance(value, str):
            setattr(user, field, value[:150])


def _profile_update(user: Any, claims: dict) -> None:
    before = (user.email, user.first_name, user.last_name)
    _profile_fill(user, claims)
    if (user.email, user.first_name, user.last_name) != before:
        user.save(update_fields=["email", "first_name", "last_name"])


def _apply_mappings(*, user: Any, mappings: list[GroupMapping], ip: str | None, groups: list[str],
                    source: str = "oidc") -> list[str]:
    """Memberships of the mapped teams and the mapped personas set to what `mappings` give."""
    changes: list[str] = []
    via = {"via": source, "groups": groups}
    managed_teams = set(GroupMapping.objects.exclude(team=None).values_list("team_id", flat=True))
    managed_personas = set(GroupMapping.objects.exclude(persona="").values_list("persona", flat=True))
    wanted_teams: dict[int, tuple[Team, str]] = {}
    for m in mappings:
        if m.team_id:
            role = m.team_role
            held = wanted_teams.get(m.team_id)
            if held is None or (role == MembershipRole.LEAD and held[1] != MembershipRole.LEAD):
                wanted_teams[m.team_id] = (m.team, role)
    current = {ms.team_id: ms for ms in Membership.objects.select_for_update().select_related("team")
               .filter(user=user, team_id__in=managed_teams)}
    for team_id, (team, role) in sorted(wanted_teams.items()):
        previous = current.get(team_id)
        if previous is not None and previous.role == role:
            continue
        if previous is not None and previous.role == MembershipRole.LEAD:
            remove_perm("portal.lead_team", user, team)
        membership_add(user=user, team=team, role=role)
        action = "team.member_added" if previous is None else "team.member_changed"
        record(action, actor=None, actor_ip=ip, object_type="team", object_id=team.pk,
               outcome="added" if previous is None else "changed",
               details={"team": team.name, "user": user.username, "role": role,
                        "previous_role": previous.role if previous else None, **via})
        changes.append(f"{action}:{team.name}:{role}")
    for team_id, membership in sorted(current.items()):
        if team_id in wanted_teams:
            continue
        if membership.role == MembershipRole.LEAD:
            remove_perm("portal.lead_team", user, membership.team)
        membership.delete()
        record("team.member_removed", actor=None, actor_ip=ip, object_type="team", object_id=team_id,
               outcome="removed", details={"team": membership.team.name, "user": user.username,
                                           "role": membership.role, **via})
        changes.append(f"team.member_removed:{membership.team.name}")
    wanted_personas = {m.persona for m in mappings if m.persona}
    held = set(user.groups.filter(name__in=managed_personas).values_list("name", flat=True))
    for persona in sorted(wanted_personas - held):
        group, _ = Group.objects.get_or_create(name=persona)
        user.groups.add(group)
        record("identity.persona_added", actor=None, actor_ip=ip, object_type="user", object_id=user.pk,
               outcome="added", details={"user": user.username, "persona": persona, **via})
        changes.append(f"identity.persona_added:{persona}")
    for persona in sorted(held - wanted_personas):
        user.groups.remove(*Group.objects.filter(name=persona))
        record("identity.persona_removed", actor=None, actor_ip=ip, object_type="user", object_id=user.pk,
               outcome="removed", details={"user": user.username, "persona": persona, **via})
        changes.append(f"identity.persona_removed:{persona}")
    if hasattr(user, "_portal_groups"):
        del user._portal_groups
    if hasattr(user, "_portal_team_ids"):  # portal.personas.member_team_ids: the memberships changed too
        del user._portal_team_ids
    return changes


def sign_in_failure_record(*, reason: str, actor_ip: str | None) -> None:
    """Audit a sign-in through the provider that failed before anyone was identified (the state,
    nonce, signature or times refused; the provider unreachable)."""
    with transaction.atomic():
        record("auth.login_failed", actor="anonymous", actor_ip=actor_ip, object_type="user", outcome="failed",
               details={"channel": "oidc", "reason": reason[:300]})


# --- the periodic check (PORTAL_OIDC_CHECK_MINUTES) ---------------------------------------------------

CHECK_BATCH = 200


def identity_check(*, limit: int = CHECK_BATCH) -> dict:
    """Ask the provider about every active linked user with a stored refresh token, least recently
    checked first (at most `limit`), as the portal: their groups are applied as at a sign-in
    (`details.via: "oidc-check"`), and a user in no mapped group, or whose refresh token the
    provider refuses (disabled, deleted, signed out everywhere there), is offboarded. A provider
    that cannot be reached changes nothing (an outage must not offboard everyone): the run stops
    and `identity.check_failed` is recorded once. Returns counts. Off (nothing done) while
    PORTAL_OIDC_CHECK_MINUTES is 0 or no issuer is set."""
    counts = {"checked": 0, "changed": 0, "offboarded": 0, "failed": 0}
    if not settings.OIDC_CHECK_MINUTES or not oidc.enabled():
        return counts
    links = list(IdentityLink.objects.filter(issuer=settings.OIDC_ISSUER, user__is_active=True)
                 .exclude(refresh_token_encrypted="").order_by(F("checked_at").asc(nulls_first=True), "pk")
                 .values_list("pk", flat=True)[:limit])
    for pk in links:
        outcome = _check_one(pk)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "unavailable":
            break
    return counts


def _check_one(link_pk: int) -> str:
    link = IdentityLink.objects.select_related("user").get(pk=link_pk)
    try:
        claims, refresh_token = oidc.refresh(decrypt(link.refresh_token_encrypted), link.subject)
    except oidc.GrantRefused as exc:
        reason = f"the identity provider no longer vouches for the user: {exc.reason}"
        with transaction.atomic():
            offboard(link.user, actor=None, reason=reason)
            IdentityLink.objects.filter(pk=link.pk).update(refresh_token_encrypted="", checked_at=timezone.now())
        return "offboarded"
    except oidc.ProviderUnavailable as exc:
        with transaction.atomic():
            record("identity.check_failed", actor=None, object_type="identity_provider", object_id=link.issuer[:200],
                   outcome="failed", details={"reason": exc.reason})
        return "unavailable"
    except oidc.SignInFailed as exc:
        with transaction.atomic():
            record("identity.check_failed", actor=None, object_type="user", object_id=link.user_id, outcome="failed",
                   details={"reason": exc.reason, "user": link.user.username})
        return "failed"
    with transaction.atomic():
        locked = IdentityLink.objects.select_for_update().select_related("user").get(pk=link.pk)
        user = locked.user
        if not user.is_active:
            return "checked"
        try:
            groups = _claim_groups(claims)
        except SignInRefused as exc:
            record("identity.check_failed", actor=None, object_type="user", object_id=user.pk, outcome="failed",
                   details={"reason": exc.reason, "user": user.username})
            return "failed"
        mappings = list(GroupMapping.objects.select_related("team").filter(group__in=groups))
        locked.groups = groups
        locked.checked_at = timezone.now()
        if not mappings:
            offboard(user, actor=None, reason="the identity provider no longer lists the user in any mapped group "
                                              "(periodic check)")
            locked.refresh_token_encrypted = ""
            locked.save(update_fields=["groups", "checked_at", "refresh_token_encrypted"])
            return "offboarded"
        changes = _apply_mappings(user=user, mappings=mappings, ip=None,
                                  groups=sorted({m.group for m in mappings}), source="oidc-check")
        locked.refresh_token_encrypted = encrypt(refresh_token)
        locked.save(update_fields=["groups", "checked_at", "refresh_token_encrypted"])
    return "changed" if changes else "checked"
