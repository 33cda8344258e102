"""Token authentication over the portal's own API tokens (portal/models/token.py), loading the
user's persona groups in the same fixed statement.

The client's token is hashed (SHA-256) and the digest looked up: the table holds no token text.
Each use is tied to the user's state now: a revoked or expired token, an inactive (offboarded)
user, or a user who no longer holds any persona is refused with a 401 (recorded as access.denied
by portal/middleware.py). `last_used_at` is written at most once a minute per token, by the same statement.

Every API call authenticates, and every one needs the caller's groups (restrict() and the
permission classes read them): one prepared statement (built once, identifiers through
psycopg.sql, the digest a parameter) returns the token's state, the user's row, its group names
and the ids of its teams.
"""

from __future__ import annotations

from functools import cache

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from psycopg import sql
from rest_framework import authentication, exceptions

from portal.models import ApiToken, Membership
from portal.prepared import prepared_cursor
from portal.services.tokens import token_digest


@cache
def _statement() -> tuple[str, list[str]]:
    """(SQL text, attribute names of the user columns it returns, in order)."""
    user_model = get_user_model()
    membership = user_model.groups.through
    group = user_model.groups.field.related_model
    fields = list(user_model._meta.concrete_fields)
    # The touch rides in the same statement (a data-modifying WITH): no round trip of its own, and
    # a write only when the stored time is over a minute old. The SELECT reads the row as it was.
    text = sql.SQL(
        "WITH touched AS (UPDATE {token} SET {t_used} = now() WHERE {t_digest} = %s AND {t_revoked} IS NULL"
        " AND {t_expires} > now() AND ({t_used} IS NULL OR {t_used} < now() - interval '1 minute') RETURNING 1) "
        "SELECT {columns}, ARRAY(SELECT g.{group_name} FROM {group} g JOIN {membership} m ON m.{m_group} = g.{g_pk}"
        " WHERE m.{m_user} = u.{u_pk}), t.{t_id}, t.{t_expires}, t.{t_revoked}, t.{t_used},"
        " ARRAY(SELECT tm.{tm_team} FROM {team_membership} tm WHERE tm.{tm_user} = u.{u_pk})"
        " FROM {token} t JOIN {user} u ON u.{u_pk} = t.{t_user} WHERE t.{t_digest} = %s"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier("u", f.column) for f in fields),
        group_name=sql.Identifier(group._meta.get_field("name").column),
        group=sql.Identifier(group._meta.db_table),
        membership=sql.Identifier(membership._meta.db_table),
        m_group=sql.Identifier(membership._meta.get_field("group").column),
        m_user=sql.Identifier(membership._meta.get_field("user").column),
        g_pk=sql.Identifier(group._meta.pk.column),
        u_pk=sql.Identifier(user_model._meta.pk.column),
        token=sql.Identifier(ApiToken._meta.db_table),
        user=sql.Identifier(user_model._meta.db_table),
        t_user=sql.Identifier(ApiToken._meta.get_field("user").column),
        t_digest=sql.Identifier(ApiToken._meta.get_field("digest").column),
        t_id=sql.Identifier(ApiToken._meta.pk.column),
        t_expires=sql.Identifier(ApiToken._meta.get_field("expires_at").column),
        t_revoked=sql.Identifier(ApiToken._meta.get_field("revoked_at").column),
        t_used=sql.Identifier(ApiToken._meta.get_field("last_used_at").column),
        team_membership=sql.Identifier(Membership._meta.db_table),
        tm_team=sql.Identifier(Membership._meta.get_field("team").column),
        tm_user=sql.Identifier(Membership._meta.get_field("user").column),
    ).as_string(None)
    return text, [f.attname for f in fields]


MAX_TOKEN_LENGTH = 200


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        # PostgreSQL refuses NUL in text; an absurdly long header is nobody's token: invalid, not a 500.
        if "\x00" in key or len(key) > MAX_TOKEN_LENGTH:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        text, attnames = _statement()
        cursor = prepared_cursor()  # planned once per connection (portal/prepared.py)
        digest = token_digest(key)
        cursor.execute(text, [digest, digest])
        row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user_values, groups = row[:len(attnames)], row[len(attnames)]
        token_id, expires_at, revoked_at, last_used_at, team_ids = row[len(attnames) + 1:]
        now = timezone.now()
        if revoked_at is not None:
            raise exceptions.AuthenticationFailed(_("Token revoked."))
        if expires_at <= now:
            raise exceptions.AuthenticationFailed(_("Token expired."))
        user = get_user_model().from_db(connection.alias, attnames, user_values)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if not groups and not user.is_superuser:
            # Every person of the portal holds a persona; one whose last was taken away acts no more.
            raise exceptions.AuthenticationFailed(_("User holds no persona."))
        # The cache portal.personas.user_groups() reads: the same set it would have queried.
        user._portal_groups = set(groups)
        # And the teams they belong to (portal.personas.member_team_ids): a submit's membership check.
        user._portal_team_ids = frozenset(team_ids)
        token = ApiToken.from_db(connection.alias, ["id", "user_id", "expires_at", "revoked_at", "last_used_at"],
                                 [token_id, user.pk, expires_at, revoked_at, last_used_at])
        token.user = user
        return (user, token)
