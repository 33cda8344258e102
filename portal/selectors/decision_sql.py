"""The decision rules' SQL (portal/selectors/approvals.py's decision_rules): the text of the
conditions that need subqueries (who leads which team, whether the user already decided on the
plan, whether the request's policy asks for them) and the request's policy row, composed with
psycopg.sql once per process and per shape of user, and RowCondition, which puts such text into a
query with the row's columns as F() expressions and the user's values as parameters. Table and
column names come from the models' _meta; nothing here depends on a user."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db.models import BooleanField, Expression, F
from guardian.models import GroupObjectPermission, UserObjectPermission
from psycopg import sql

from portal.choices import RequestType
from portal.models import Approval, ApprovalPolicy, Membership, Team


@functools.cache
def _led_teams_sql() -> str:
    """The ids of the teams a user (%s, three times) belongs to and leads, as SQL text.

    A lead holds guardian's `portal.lead_team` on the team, given to them or to one of their
    groups, and is a member; being a superuser does not make one a lead. (Guardian's generic tables
    keep the object's pk as text.) Written out rather than composed with the ORM: it sits in every
    decision rule, and compiling the same subquery through the ORM cost more than running it
    (the request page read went from 16 to 40 ms). Table and column names from _meta, the user as
    a parameter.
    """
    membership, user_groups_table = Membership, get_user_model().groups.through
    names = {
        "team": Team._meta.db_table, "membership": membership._meta.db_table,
        "membership_team": membership._meta.get_field("team").column,
        "membership_user": membership._meta.get_field("user").column,
        "uop": UserObjectPermission._meta.db_table, "gop": GroupObjectPermission._meta.db_table,
        "permission": Permission._meta.db_table, "content_type": ContentType._meta.db_table,
        "user_groups": user_groups_table._meta.db_table,
    }
    ident = {key: sql.Identifier(value) for key, value in names.items()}
    lead = sql.SQL(
        "JOIN {permission} p ON p.id = o.permission_id JOIN {content_type} c ON c.id = p.content_type_id"
        " WHERE o.content_type_id = c.id AND c.app_label = {app} AND c.model = {model}"
        " AND p.codename = 'lead_team' AND o.object_pk = t.id::text"
    ).format(**ident, app=sql.Literal(Team._meta.app_label), model=sql.Literal(Team._meta.model_name))
    return sql.SQL(
        "SELECT t.id FROM {team} t JOIN {membership} m ON m.{membership_team} = t.id AND m.{membership_user} = %s"
        " WHERE EXISTS (SELECT 1 FROM {uop} o {lead} AND o.user_id = %s)"
        " OR EXISTS (SELECT 1 FROM {gop} o JOIN {user_groups} ug ON ug.group_id = o.group_id {lead}"
        " AND ug.user_id = %s)"
    ).format(**ident, lead=lead).as_string(None)


class RowCondition(Expression):
    """A condition (or, with `output_field`, a value) over a ChangeRequest row, its SQL text
    written once per process.

    The row's columns are named {placeholders} in the text and given as F() expressions, which
    Django resolves like any other (the right table alias, the instance join); the user's values
    are parameters. Compiling it is a format() of cached text: the same rules composed of ORM
    subqueries cost ~3.5 ms of Python per query that carried them (every approve, every
    reviewer's detail read and queue).
    """

    def __init__(self, text: str, columns: dict[str, str], params: tuple = (), output_field: Any = None) -> None:
        super().__init__(output_field=output_field or BooleanField())
        self.text, self.names, self.params = text, list(columns), tuple(params)
        self.columns: list[Any] = [F(path) for path in columns.values()]

    def get_source_expressions(self) -> list[Any]:
        return self.columns

    def set_source_expressions(self, exprs: list[Any]) -> None:
        self.columns = list(exprs)

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list]:
        rendered = {}
        for name, column in zip(self.names, self.columns, strict=True):
            column_sql, column_params = compiler.compile(column)
            if column_params:  # a column reference has none; the text's %s are self.params only
                raise ValueError(f"column {name} compiled with parameters")
            rendered[name] = column_sql
        return self.text.format_map(rendered), list(self.params)


# The request's columns the hand-written rules read (placeholders in their text).
_ROW_COLUMNS = {"pk": "pk", "plan_hash": "plan_hash", "type": "type", "risk": "risk", "team": "team_id",
                "owner_team": "owner_team_id", "environment": "instance__environment"}


def _policy_join() -> sql.Composable:
    """The request's policy row as `pol` (all NULL where none exists; unique per environment,
    type and risk: policy_unique), for a scalar subquery over one row."""
    policy = ApprovalPolicy._meta
    return sql.SQL(
        "FROM (VALUES (1)) AS one (x) LEFT JOIN {table} pol ON pol.{environment} = {{environment}}"
        " AND pol.{request_type} = {{type}} AND pol.{risk} = {{risk}}"
    ).format(table=sql.Identifier(policy.db_table),
             **{name: sql.Identifier(policy.get_field(name).column) for name in ("environment", "request_type", "risk")})


@functools.cache
def _undecided_sql() -> str:
    """No approval or rejection of the row's plan by the user (%s) yet."""
    approval = Approval._meta
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM {table} a WHERE a.{plan_hash} = {{plan_hash}} AND a.{request} = {{pk}}"
        " AND a.{reviewer} = %s)"
    ).format(table=sql.Identifier(approval.db_table), plan_hash=sql.Identifier(approval.get_field("plan_hash").column),
             request=sql.Identifier(approval.get_field("request").column),
             reviewer=sql.Identifier(approval.get_field("reviewer").column)).as_string(None)


@functools.cache
def _approver_sql(*, in_groups: bool, fallback_member: bool, reviewer: bool) -> str:
    """The approver rule (see _may_approve) as SQL text, one per shape of user: whether they are in
    any group (the groups, %s, as a text array), in a fallback group, a reviewer. The policy row is
    read once (a LEFT JOIN) where the ORM's version had an EXISTS per use; NULL counts as false,
    as it does in every use of a rule (a filter, or a refusal when the annotation is not true)."""
    policy = ApprovalPolicy._meta
    groups, lead = (sql.Identifier(policy.get_field(name).column) for name in ("approver_groups", "require_owner_lead"))
    led = sql.SQL(_led_teams_sql())
    in_group = sql.SQL("(pol.id IS NOT NULL AND COALESCE(pol.{groups} ?| %s, FALSE))").format(groups=groups) \
        if in_groups else sql.SQL("FALSE")
    if fallback_member:  # no policy row: policy_for's fallback groups decide
        in_group = sql.SQL("({} OR pol.id IS NULL)").format(in_group)
    lead_slot = sql.SQL(
        "({{owner_team}} IN ({led}) AND NOT ({{owner_team}} = {{team}} AND {{owner_team}} IS NOT NULL)"
        " AND (pol.id IS NULL OR pol.{lead} OR {{type}} = {grant}))"
    ).format(led=led, lead=lead, grant=sql.Literal(RequestType.GRANT.value))
    condition = sql.SQL("({} OR {})").format(in_group, lead_slot)
    if not reviewer:
        condition = sql.SQL("({} AND {{owner_team}} IN ({}))").format(condition, led)
    return sql.SQL("(SELECT ({}) IS TRUE {})").format(condition, _policy_join()).as_string(None)


@functools.cache
def _policy_sql() -> str:
    policy = ApprovalPolicy._meta
    fields = sql.SQL(", ").join(sql.SQL("{}, pol.{}").format(sql.Literal(name), sql.Identifier(policy.get_field(name).column))
                                for name in ("id", "approvals_required", "approver_groups", "require_owner_lead",
                                             "auto_approve"))
    return sql.SQL("(SELECT CASE WHEN pol.id IS NULL THEN NULL ELSE jsonb_build_object({}) END {})").format(
        fields, _policy_join()).as_string(None)
