"""The demo: personas, teams, the local `demo` instance. Idempotent: a second run keeps all data."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from guardian.shortcuts import assign_perm

from portal.choices import Environment, MembershipRole, Persona
from portal.models import Instance, Membership, Team
from portal.services.instances import instance_create_local
from portal.services.policies import policy_seed_defaults

PERSONAS = [
    # username, groups, team, team role, superuser
    ("admin", [Persona.ADMINS], None, None, True),
    ("alice", [Persona.REQUESTERS], "payments", MembershipRole.LEAD, False),
    ("dave", [Persona.REQUESTERS], "analytics", MembershipRole.LEAD, False),
    ("bob", [Persona.REVIEWERS], None, None, False),
    ("carol", [Persona.AUDITORS], None, None, False),
]
TEAMS = {"payments": "Payments services", "analytics": "Analytics and reporting"}
DEMO_INSTANCE = "demo"
DEMO_DATABASE = "app"


def demo_password() -> str:
    """PORTAL_DEMO_PASSWORD, else one generated once and kept under var/."""
    if settings.DEMO_PASSWORD:
        return settings.DEMO_PASSWORD
    path = Path(settings.VAR_DIR) / "demo-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def groups_ensure() -> None:
    for persona in Persona:
        Group.objects.get_or_create(name=persona.value)


def membership_add(*, user: User, team: Team, role: str = MembershipRole.MEMBER) -> Membership:
    membership, _ = Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    if role == MembershipRole.LEAD:
        assign_perm("portal.lead_team", user, team)
    return membership


@transaction.atomic
def seed_people(password: str) -> None:
    groups_ensure()
    for name, description in TEAMS.items():
        Team.objects.get_or_create(name=name, defaults={"description": description})
    for username, groups, team, team_role, superuser in PERSONAS:
        user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.test"})
        user.is_superuser = superuser
        user.is_staff = superuser
        user.set_password(password)  # the run command prints it; kept in step with the environment
        user.save()
        user.groups.add(*Group.objects.filter(name__in=[g.value for g in groups]))
        if team:
            membership_add(user=user, team=Team.objects.get(name=team), role=team_role)
    policy_seed_defaults()


def seed_demo(*, with_instance: bool = True) -> dict:
    password = demo_password()
    seed_people(password)
    instance = Instance.objects.filter(name=DEMO_INSTANCE).first()
    if with_instance and instance is None:
        admin = User.objects.get(username="admin")
        instance = instance_create_local(actor=admin, name=DEMO_INSTANCE, environment=Environment.DEV,
                                         databases=(DEMO_DATABASE,))
    return {"password": password, "instance": instance}
