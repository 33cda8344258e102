"""/api/v1/instances/{id}/team-checks/ and …/team-checks/{check_id}/: the teams' own drill checks (issue #20).

Who may do what: leads of a team that owns schemas of a database create, change (PUT, only the
fields given) and delete that team's checks on the instance; platform admins any team's. Members
read their team's checks; reviewers, auditors and admins read every team's; anyone else signed
in gets an empty list, and a 404 for another team's check. Each change is audited
(`backup.team_check_created` / `_changed` / `_deleted`). The SQL is checked at input
(provisioning/backups/team_checks.py): a refusal is a 400 naming `sql`.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.pagination import Pagination
from portal.api.schema import error_responses
from portal.errors import InvalidPayload
from portal.models import Team, TeamCheck
from portal.models.backup import TeamCheckExpect
from portal.selectors.instances import instance_get_for
from portal.selectors.team_checks import last_results, team_check_get_for, team_check_list
from portal.services.auth import client_ip
from portal.services.team_checks import MAX_EXPECTED, team_check_create, team_check_delete, team_check_update
from provisioning.backups.team_checks import MAX_SQL_CHARS

_EXPECT_HELP = ("rows: passes when at least one row comes back; no_rows: when none does; equals: when the "
                "first column of the first row, as text (true/false, null, numbers as written), equals `expected`")


class LastResultSerializer(serializers.Serializer):
    drill = serializers.IntegerField()
    ok = serializers.BooleanField()
    detail = serializers.CharField(help_text="the reason; never the rows (for equals, the first value, cut short)")
    duration_ms = serializers.FloatField(allow_null=True)


class TeamCheckOutput(serializers.Serializer):
    id = serializers.IntegerField()
    instance = serializers.IntegerField(source="instance_id")
    team = serializers.CharField(source="team.name")
    database = serializers.CharField()
    name = serializers.CharField()
    sql = serializers.CharField(help_text="the query as the portal normalised it: what each drill runs")
    expect = serializers.ChoiceField(choices=TeamCheckExpect.choices, help_text=_EXPECT_HELP)
    expected = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    last_result = serializers.SerializerMethodField(help_text="its result in the newest finished drill, if it ran")

    @extend_schema_field(LastResultSerializer(allow_null=True))
    def get_last_result(self, check) -> dict | None:
        return (self.context.get("last_results") or {}).get(check.pk)


class TeamCheckInput(serializers.Serializer):
    team = serializers.CharField(max_length=63, help_text="the team's name; you must lead it")
    database = serializers.CharField(max_length=63, help_text="a database in which the team owns schemas")
    name = serializers.CharField(max_length=63)
    sql = serializers.CharField(max_length=MAX_SQL_CHARS, help_text="one SELECT over the team's own schemas "
                                "(schema-qualified), calling only allow-listed read-only built-ins")
    expect = serializers.ChoiceField(choices=TeamCheckExpect.choices, default=TeamCheckExpect.ROWS,
                                     help_text=_EXPECT_HELP)
    expected = serializers.CharField(max_length=MAX_EXPECTED, required=False, allow_blank=True, default="")


class TeamCheckChange(serializers.Serializer):
    name = serializers.CharField(max_length=63, required=False)
    sql = serializers.CharField(max_length=MAX_SQL_CHARS, required=False)
    expect = serializers.ChoiceField(choices=TeamCheckExpect.choices, required=False, help_text=_EXPECT_HELP)
    expected = serializers.CharField(max_length=MAX_EXPECTED, required=False, allow_blank=True)


def _team_named(name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise InvalidPayload.field("team", "no such team")
    return team


class TeamCheckListView(ListAPIView):
    serializer_class = TeamCheckOutput
    pagination_class = Pagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no instance
            return TeamCheck.objects.none()
        self.instance = instance_get_for(self.request.user, self.kwargs["pk"])
        return team_check_list(self.request.user, self.instance).select_related("created_by")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["last_results"] = getattr(self, "page_results", {})
        return context

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        if page is not None:
            # The newest drill's results of this page's checks: one query for the page.
            self.page_results = last_results(self.instance, page)
        return page

    @extend_schema(operation_id="instances_team_checks_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=TeamCheckInput, responses={201: TeamCheckOutput, **error_responses(409)},
                   operation_id="instances_team_checks_create")
    def post(self, request, pk: int):
        instance = instance_get_for(request.user, pk)
        data = TeamCheckInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields["team"] = _team_named(fields["team"])
        check = team_check_create(actor=request.user, actor_ip=client_ip(request), instance=instance, **fields)
        return Response(TeamCheckOutput(check).data, status=status.HTTP_201_CREATED)


class TeamCheckDetailView(APIView):
    def _check(self, request, pk: int, check_id: int) -> TeamCheck:
        return team_check_get_for(request.user, instance_get_for(request.user, pk), check_id)

    @extend_schema(responses={200: TeamCheckOutput}, operation_id="instances_team_checks_retrieve")
    def get(self, request, pk: int, check_id: int):
        check = self._check(request, pk, check_id)
        results = last_results(check.instance, [check])
        return Response(TeamCheckOutput(check, context={"last_results": results}).data)

    @extend_schema(request=TeamCheckChange, responses={200: TeamCheckOutput, **error_responses(409)},
                   operation_id="instances_team_checks_update")
    def put(self, request, pk: int, check_id: int):
        check = self._check(request, pk, check_id)
        data = TeamCheckChange(data=request.data)
        data.is_valid(raise_exception=True)
        check = team_check_update(actor=request.user, actor_ip=client_ip(request), check=check,
                                  **data.validated_data)
        return Response(TeamCheckOutput(check).data)

    @extend_schema(responses={204: None}, operation_id="instances_team_checks_destroy")
    def delete(self, request, pk: int, check_id: int):
        check = self._check(request, pk, check_id)
        team_check_delete(actor=request.user, actor_ip=client_ip(request), check=check)
        return Response(status=status.HTTP_204_NO_CONTENT)
