"""The teams' own check queries for restore drills (issue #20): create, change, delete.

Leads of a team that owns schemas of a database (ManagedSchema) define the checks the drills of
that instance run against the restored copy of the database; platform admins may too. Nobody
else: members read them (portal/selectors/team_checks.py), another team's lead gets a 403 here
and a 404 for an existing check of another team. The rest of the backup policy stays a platform
admin's (portal/services/backups.py). The SQL is checked by provisioning/backups/team_checks.py
and stored as normalised there; every change is audited (`backup.team_check_created`,
`backup.team_check_changed` with before and after, `backup.team_check_deleted`).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from audit.services import record
from portal.errors import Conflict, InvalidPayload, PolicyViolation
from portal.models import Instance, Team, TeamCheck
from portal.models.backup import TeamCheckExpect
from portal.personas import is_admin
from portal.selectors.approvals import leads_team
from portal.selectors.team_checks import team_schemas
from portal.services.backups import _CHECK_NAME
from provisioning.backups.team_checks import clean_sql

MAX_CHECKS_PER_TEAM = 20
MAX_EXPECTED = 200
CHANGEABLE = ("name", "sql", "expect", "expected")


def _require_lead(actor: Any, team: Team) -> None:
    if not is_admin(actor) and not leads_team(actor, team):
        raise PolicyViolation(f"only leads of team {team.name} define its drill checks",
                              errors={"team": [f"you are not a lead of team {team.name}"]})


def _body(check: TeamCheck) -> dict[str, Any]:
    return {"team": check.team.name, "database": check.database, "name": check.name, "sql": check.sql,
            "expect": check.expect, "expected": check.expected}


def _clean(check: TeamCheck) -> None:
    """Check and normalise the fields of `check` in place (InvalidPayload naming the field)."""
    if not isinstance(check.name, str) or not _CHECK_NAME.match(check.name):
        raise InvalidPayload.field("name", "1-63 characters: lower-case letters, digits, _ and -")
    if check.expect not in TeamCheckExpect.values:
        raise InvalidPayload.field("expect", f"one of {', '.join(TeamCheckExpect.values)}")
    expected = check.expected if isinstance(check.expected, str) else None
    if expected is None or len(expected) > MAX_EXPECTED or "\x00" in expected:
        raise InvalidPayload.field("expected", f"text of at most {MAX_EXPECTED} characters")
    if check.expect == TeamCheckExpect.EQUALS and not expected:
        raise InvalidPayload.field("expected", "the value the first column must equal (true/false, null, a number, text)")
    if check.expect != TeamCheckExpect.EQUALS and expected:
        raise InvalidPayload.field("expected", f"only for expect = {TeamCheckExpect.EQUALS}")
    schemas = team_schemas(check.instance, check.team, check.database)
    if not schemas:
        raise InvalidPayload.field("database", f"team {check.team.name} owns no schema in database "
                                               f"{check.database} of {check.instance.name}")
    check.sql = clean_sql(check.sql, schemas=schemas)


def _check_instance(instance: Instance) -> None:
    if instance.status == "retired":
        raise Conflict("a retired instance is not drilled")
    if instance.replica_of_id is not None:
        raise InvalidPayload.field("instance", f"{instance.name} is a replica; its primary's backups are drilled")


def team_check_create(*, actor: Any, instance: Instance, team: Team, database: str, name: str, sql: str,
                      expect: str = TeamCheckExpect.ROWS, expected: str = "",
                      actor_ip: str | None = None) -> TeamCheck:
    _require_lead(actor, team)
    _check_instance(instance)
    if not isinstance(database, str) or not 1 <= len(database.encode()) <= 63:
        raise InvalidPayload.field("database", "a database name of 1 to 63 bytes")
    check = TeamCheck(instance=instance, team=team, database=database, name=name, sql=sql, expect=expect,
                      expected=expected, created_by=actor)
    _clean(check)
    with transaction.atomic():
        # The team's row, locked: two leads adding at once cannot pass the limit together.
        Team.objects.select_for_update().filter(pk=team.pk).first()
        if TeamCheck.objects.filter(instance=instance, team=team).count() >= MAX_CHECKS_PER_TEAM:
            raise InvalidPayload.field("name", f"at most {MAX_CHECKS_PER_TEAM} checks per team and instance")
        if TeamCheck.objects.filter(instance=instance, team=team, name=check.name).exists():
            raise Conflict(f"team {team.name} has a check named {check.name} on {instance.name}",
                           errors={"name": ["a check with this name exists"]})
        try:
            with transaction.atomic():
                check.save()
        except IntegrityError:
            raise Conflict(f"team {team.name} has a check named {check.name} on {instance.name}",
                           errors={"name": ["a check with this name exists"]}) from None
        record("backup.team_check_created", actor=actor, actor_ip=actor_ip, object_type="team_check",
               object_id=check.pk, instance=instance, database=check.database, outcome="created",
               details={"instance": instance.name, **_body(check)})
    return check


def team_check_update(*, actor: Any, check: TeamCheck, actor_ip: str | None = None, **changes: Any) -> TeamCheck:
    """Change the name, SQL or expectation of a check; its team and database stay."""
    _require_lead(actor, check.team)
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise InvalidPayload.field(sorted(unknown)[0], "cannot be changed (delete the check and create another)")
    _check_instance(check.instance)
    with transaction.atomic():
        current = TeamCheck.objects.select_for_update().select_related("team", "instance").get(pk=check.pk)
        before = _body(current)
        for field, value in changes.items():
            setattr(current, field, value)
        if "expect" in changes and "expected" not in changes and current.expect != TeamCheckExpect.EQUALS:
            current.expected = ""
        _clean(current)
        if current.name != before["name"] and TeamCheck.objects.filter(
                instance=current.instance, team=current.team, name=current.name).exists():
            raise Conflict(f"team {current.team.name} has a check named {current.name}",
                           errors={"name": ["a check with this name exists"]})
        current.save()
        after = _body(current)
        record("backup.team_check_changed", actor=actor, actor_ip=actor_ip, object_type="team_check",
               object_id=current.pk, instance=current.instance, database=current.database,
               outcome="changed" if after != before else "unchanged",
               details={"instance": current.instance.name, "before": before, "after": after})
    return current


def team_check_delete(*, actor: Any, check: TeamCheck, actor_ip: str | None = None) -> None:
    _require_lead(actor, check.team)
    with transaction.atomic():
        body = _body(check)
        if not TeamCheck.objects.filter(pk=check.pk).delete()[0]:
            return
        record("backup.team_check_deleted", actor=actor, actor_ip=actor_ip, object_type="team_check",
               object_id=check.pk, instance=check.instance, database=check.database, outcome="deleted",
               details={"instance": check.instance.name, **body})

