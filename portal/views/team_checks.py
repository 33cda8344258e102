"""An instance's drill check queries of the teams (issue #20): /instances/<id>/drill-checks/.

Every signed-in user who sees the instance may open it and sees the checks of their own teams
(reviewers, auditors and admins: every team's). Leads of a team owning schemas on the instance
add, change and delete that team's checks (platform admins any team's); for anyone else the
service refuses (403), and another team's check is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.errors import DomainError, InvalidPayload, PolicyViolation
from portal.forms.backups import TeamCheckForm
from portal.models import Team
from portal.selectors.instances import instance_get_for
from portal.selectors.team_checks import last_results, team_check_get_for, team_check_list, teams_editable_by
from portal.services.auth import client_ip
from portal.services.team_checks import team_check_create, team_check_delete, team_check_update


def _post(request, instance) -> None:
    action = request.POST.get("action", "")
    actor = {"actor": request.user, "actor_ip": client_ip(request)}
    if action == "delete":
        check = team_check_get_for(request.user, instance, _check_id(request))
        team_check_delete(check=check, **actor)
        messages.success(request, f"Check {check.name} deleted.")
        return
    if action not in ("create", "update"):
        messages.error(request, "action: one of create, update, delete")
        return
    form = TeamCheckForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return
    fields = form.cleaned_data
    if action == "create":
        team = Team.objects.filter(name=fields["team"]).first()
        if team is None:
            raise InvalidPayload.field("team", "no such team")
        check = team_check_create(instance=instance, team=team, database=fields["database"], name=fields["name"],
                                  sql=fields["sql"], expect=fields["expect"], expected=fields["expected"], **actor)
        messages.success(request, f"Check {check.name} added for team {team.name}.")
    else:
        check = team_check_get_for(request.user, instance, _check_id(request))
        check = team_check_update(check=check, name=fields["name"], sql=fields["sql"], expect=fields["expect"],
                                  expected=fields["expected"], **actor)
        messages.success(request, f"Check {check.name} saved.")


def _check_id(request) -> int:
    try:
        return int(request.POST.get("check", ""))
    except ValueError:
        raise InvalidPayload.field("check", "the id of a check") from None


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def instance_team_checks(request, pk: int):
    instance = instance_get_for(request.user, pk)
    if request.method == "POST":
        try:
            _post(request, instance)
        except PolicyViolation as exc:
            raise PermissionDenied(exc.detail) from None
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("instance-team-checks", pk=instance.pk)
    checks = list(team_check_list(request.user, instance).select_related("created_by"))
    editable = teams_editable_by(request.user, instance)
    editable_ids = {team.pk for team in editable}
    results = last_results(instance, checks)
    rows = [{"check": check, "form": TeamCheckForm(initial={"name": check.name, "sql": check.sql,
                                                             "expect": check.expect, "expected": check.expected},
                                                    auto_id=f"c{check.pk}_%s"),
             "can_edit": check.team_id in editable_ids, "result": results.get(check.pk)} for check in checks]
    return render(request, "instances/team_checks.html", {
        "instance": instance,
        "rows": rows,
        "editable_teams": editable,
        "form": TeamCheckForm(initial={"database": instance.database}),
    })
