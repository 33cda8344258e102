"""Reads of the teams' drill check queries (issue #20): who sees which, the schemas a team owns.

Members of a team see its checks; reviewers, auditors and platform admins see every team's
(RestrictedQuerySet by the check's team). Another team's check is a 404, never a 403.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404

from portal.models import Instance, ManagedSchema, RestoreDrill, Team, TeamCheck
from portal.models.backup import DrillState
from portal.personas import is_admin
from portal.selectors.approvals import leads_team


def team_check_list(user: Any, instance: Instance):
    return TeamCheck.objects.restrict(user, "view").filter(instance=instance).select_related("team")


def team_check_get_for(user: Any, instance: Instance, pk: int) -> TeamCheck:
    return get_object_or_404(team_check_list(user, instance), pk=pk)


def team_schemas(instance: Instance, team: Team | int, database: str) -> list[str]:
    """The schemas the team owns in the instance's database (the portal's record of them)."""
    return sorted(ManagedSchema.objects.filter(instance=instance, team=team, database=database)
                  .values_list("name", flat=True))


def teams_editable_by(user: Any, instance: Instance) -> list[Team]:
    """The teams whose checks on this instance the user may write: every team owning schemas on
    it for a platform admin, else those of them the user leads."""
    owning = Team.objects.filter(schemas__instance=instance).distinct().order_by("name")
    if is_admin(user):
        return list(owning)
    return [team for team in owning.filter(memberships__user=user) if leads_team(user, team)]


def drill_team_checks(instance: Instance) -> list[dict[str, Any]]:
    """The teams' checks of an instance as the drill engine takes them, with each team's schemas
    in the database as they are now (a team that lost them gets a failed check, not a wider role)."""
    checks = list(TeamCheck.objects.filter(instance=instance).select_related("team").order_by("team__name", "name"))
    schemas: dict[tuple[int, str], list[str]] = {}
    for check in checks:
        key = (check.team_id, check.database)
        if key not in schemas:
            schemas[key] = team_schemas(instance, check.team_id, check.database)
    return [{"team_id": c.team_id, "team": c.team.name, "name": c.name, "database": c.database, "sql": c.sql,
             "expect": c.expect, "expected": c.expected, "schemas": schemas[(c.team_id, c.database)]}
            for c in checks]


def last_results(instance: Instance, checks: list[TeamCheck]) -> dict[int, dict]:
    """The newest finished drill's result of each check ({check pk: entry}), for the page."""
    drill = (RestoreDrill.objects.filter(instance=instance).exclude(state=DrillState.RUNNING)
             .order_by("-started_at").only("checks", "started_at").first())
    if drill is None:
        return {}
    by_name = {entry.get("name"): {**entry, "drill": drill.pk} for entry in drill.checks or []}
    return {check.pk: by_name[key] for check in checks if (key := f"team:{check.team.name}:{check.name}") in by_name}
