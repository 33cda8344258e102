"""Reads of the audit log: filters, keyset pages, and the SQL that exports stream from.

Filters are validated here (InvalidPayload names the field) and rendered as psycopg
sql.Composed with parameters, so the same WHERE clause feeds the ORM-free COPY exports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Subquery
from django.utils.dateparse import parse_date, parse_datetime
from psycopg import sql

from audit.chain import TS_SQL
from audit.chainer import ensure_chained
from audit.models import AuditEvent
from portal.errors import InvalidPayload

FILTER_FIELDS = ("since", "until", "action", "actor", "instance", "request")
_ACTION = re.compile(r"^[a-z0-9_.*-]{1,64}$")
MAX_PAGE = 500


@dataclass
class AuditFilters:
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    action: str = ""  # exact, or a prefix ending in ".*" (e.g. "request.*")
    actor: str = ""
    instance: str = ""
    request: int | None = None
    raw: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        """The filters as given (for the audit.exported event and links)."""
        return dict(self.raw)

    def where(self, alias: str = "") -> tuple[sql.Composable, list[Any]]:
        """A WHERE clause (without the keyword) and its parameters; columns qualified by `alias`."""

        def col(name: str) -> sql.Composable:
            return sql.Identifier(alias, name) if alias else sql.Identifier(name)

        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if self.since is not None:
            conditions.append(sql.SQL("{} >= %s").format(col("ts")))
            params.append(self.since)
        if self.until is not None:
            conditions.append(sql.SQL("{} < %s").format(col("ts")))
            params.append(self.until)
        if self.action:
            if self.action.endswith(".*"):
                conditions.append(sql.SQL("{} LIKE %s").format(col("action")))
                params.append(self.action[:-1].replace("_", "\\_") + "%")
            else:
                conditions.append(sql.SQL("{} = %s").format(col("action")))
                params.append(self.action)
        for name, value in (("actor", self.actor), ("instance", self.instance)):
            if value:
                conditions.append(sql.SQL("{} = %s").format(col(name)))
                params.append(value)
        if self.request is not None:
            conditions.append(sql.SQL("{} = %s").format(col("request_id")))
            params.append(self.request)
        # Chained events only: a pending one (seq < 0, audit/chainer.py) has no final seq yet.
        conditions.append(sql.SQL("{} > 0").format(col("seq")))
        return sql.SQL(" AND ").join(conditions), params

    def queryset(self):
        qs = AuditEvent.objects.filter(seq__gt=0)  # chained events only (audit/chainer.py)
        if self.since is not None:
            qs = qs.filter(ts__gte=self.since)
        if self.until is not None:
            qs = qs.filter(ts__lt=self.until)
        if self.action:
            qs = qs.filter(action__startswith=self.action[:-1]) if self.action.endswith(".*") else qs.filter(
                action=self.action)
        if self.actor:
            qs = qs.filter(actor=self.actor)
        if self.instance:
            qs = qs.filter(instance=self.instance)
        if self.request is not None:
            qs = qs.filter(request_id=self.request)
        return qs

    def period_label(self) -> str:
        start = self.since.date().isoformat() if self.since else "start"
        end = (self.until - timedelta(microseconds=1)).date().isoformat() if self.until else "now"
        return f"{start}_{end}"


def parse_moment(name: str, text: str, *, end_of_day: bool) -> datetime:
    """A date (whole day) or an ISO 8601 datetime; naive values are UTC."""
    text = text.strip()
    try:
        # A bare date first: parse_datetime would read it as midnight and lose "the whole day".
        day = parse_date(text) if len(text) == 10 else None
        moment = None if day else parse_datetime(text)
    except ValueError:
        moment, day = None, None
    if moment is None and day is None:
        raise InvalidPayload.field(name, "must be an ISO 8601 date (2026-11-01) or date-time (2026-11-01T09:30:00Z)")
    try:
        if day is not None:
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # In UTC: PostgreSQL refuses offsets past ±15:59 that Python accepts (+18:41 was a 500,
        # found by the API fuzzer), and 9999-12-31 + a day or year 1 at +05:00 overflow.
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidPayload.field(name, "out of range") from None


def parse_filters(params: Any) -> AuditFilters:
    """Validate since/until/action/actor/instance/request from a QueryDict or dict."""
    raw = {k: str(params.get(k)).strip() for k in FILTER_FIELDS if params.get(k) not in (None, "")}
    filters = AuditFilters(raw=raw)
    for name, value in raw.items():
        if "\x00" in value:  # PostgreSQL text cannot hold it: the query would fail (that was a 500)
            raise InvalidPayload.field(name, "must not contain a NUL character")
    if "since" in raw:
        filters.since = parse_moment("since", raw["since"], end_of_day=False)
    if "until" in raw:
        filters.until = parse_moment("until", raw["until"], end_of_day=True)
    if filters.since and filters.until and filters.until <= filters.since:
        raise InvalidPayload.field("until", "must be after since")
    if "action" in raw:
        if not _ACTION.match(raw["action"]) or "*" in raw["action"][:-2]:
            raise InvalidPayload.field("action", "must be an action name such as request.approved, or a prefix such as request.*")
        filters.action = raw["action"]
    if "actor" in raw:
        if len(raw["actor"]) > 150:
            raise InvalidPayload.field("actor", "at most 150 characters")
        filters.actor = raw["actor"]
    if "instance" in raw:
        if len(raw["instance"]) > 63:
            raise InvalidPayload.field("instance", "at most 63 characters")
        filters.instance = raw["instance"]
    if "request" in raw:
        # isascii: "²".isdigit() is True, yet int("²") raises: that was a 500.
        if not (raw["request"].isascii() and raw["request"].isdigit()) or len(raw["request"]) > 18:
            raise InvalidPayload.field("request", "must be a request id (a positive integer)")
        filters.request = int(raw["request"])
    return filters


def parse_seq(params: Any, name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if not (str(value).isascii() and str(value).isdigit()) or len(str(value)) > 18:
        raise InvalidPayload.field(name, "must be a seq (a non-negative integer)")
    return int(value)


def event_page(filters: AuditFilters, *, after: int | None = None, before: int | None = None,
               limit: int = 50) -> tuple[list[AuditEvent], int | None]:
    """One keyset page: ascending after `after`, or newest first before `before` (or from the end
    when `before` is given as 0 / None with newest=True). Returns (events, next cursor or None)."""
    limit = max(1, min(limit, MAX_PAGE))
    # Pages follow seq: what is committed gets its final seq first, so a reader paging by seq
    # neither skips an event that is chained later nor sees one twice.
    ensure_chained()
    qs = filters.queryset()
    # ts ascends with seq (taken from the database clock under the head lock), so a period is
    # also a seq range: two probes of the ts index bound the keyset scan, which then stays
    # fast at millions of rows whichever end of the period the page starts from.
    if filters.since is not None:
        qs = qs.filter(seq__gte=Subquery(AuditEvent.objects.filter(ts__gte=filters.since).order_by("ts")
                                         .values("seq")[:1]))
    if filters.until is not None:
        qs = qs.filter(seq__lte=Subquery(AuditEvent.objects.filter(ts__lt=filters.until).order_by("-ts")
                                         .values("seq")[:1]))
    if before is not None:
        if before > 0:
            qs = qs.filter(seq__lt=before)
        rows = list(qs.order_by("-seq")[: limit + 1])
    else:
        if after is not None:
            qs = qs.filter(seq__gt=after)
        rows = list(qs.order_by("seq")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


def event_get(seq: int) -> AuditEvent | None:
    return AuditEvent.objects.filter(seq=seq).first()


COUNT_CAP = 10_000


def event_count(filters: AuditFilters, *, cap: int = COUNT_CAP) -> int:
    """How many events match, counted up to `cap` (cap + 1 means "more than cap"): the total above
    the log stays one bounded index scan at millions of rows."""
    return filters.queryset()[: cap + 1].count()


def event_neighbours(seq: int) -> tuple[int | None, int | None]:
    """The seq of the event before and after `seq` in the whole log (the drawer's previous / next);
    one query, two probes of the primary key. Only chained events (seq > 0) are neighbours."""
    row = AuditEvent.objects.filter(seq=seq).values("seq").annotate(
        previous=Subquery(AuditEvent.objects.filter(seq__lt=seq, seq__gt=0).order_by("-seq").values("seq")[:1]),
        following=Subquery(AuditEvent.objects.filter(seq__gt=seq).order_by("seq").values("seq")[:1]),
    ).first()
    return (row["previous"], row["following"]) if row else (None, None)


# --- export SQL ---------------------------------------------------------------------------
_EVENTS = sql.Identifier(AuditEvent._meta.db_table)
_EXPORT_SELECT = sql.SQL(
    "SELECT seq, {ts} AS ts, actor, host(actor_ip) AS actor_ip, action, object_type, object_id, "
    "instance, database, statement, request_id, approvers::text AS approvers, outcome, details::text AS details, "
    "prev_hash, hash, key_id, chain_format FROM {events}"
).format(ts=sql.SQL(TS_SQL), events=_EVENTS)
# One JSON object per line; jsonb values embedded as JSON (not as strings).
_JSONL_SELECT = sql.SQL(
    "SELECT json_build_object('seq', seq, 'ts', {ts}, 'actor', actor, 'actor_ip', host(actor_ip), "
    "'action', action, 'object_type', object_type, 'object_id', object_id, 'instance', instance, "
    "'database', database, 'statement', statement, 'request_id', request_id, 'approvers', approvers, "
    "'outcome', outcome, 'details', details, 'prev_hash', prev_hash, 'hash', hash, 'key_id', key_id, "
    "'chain_format', chain_format)::text FROM {events}"
).format(ts=sql.SQL(TS_SQL), events=_EVENTS)


def export_copy_sql(filters: AuditFilters, export_format: str) -> tuple[sql.Composed, list[Any]]:
    """COPY ... TO STDOUT for csv or jsonl, with the filters as bound parameters."""
    where, params = filters.where()
    if export_format == "csv":
        statement = sql.SQL("COPY ({select} WHERE {where} ORDER BY seq) TO STDOUT (FORMAT csv, HEADER)").format(
            select=_EXPORT_SELECT, where=where)
    elif export_format == "jsonl":
        # CSV mode with quote and delimiter characters JSON never contains raw (json_build_object
        # escapes every control character), so each line is the JSON text, unescaped, unquoted.
        statement = sql.SQL(
            "COPY ({select} WHERE {where} ORDER BY seq) TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
        ).format(select=_JSONL_SELECT, where=where)
    else:
        raise InvalidPayload.field("format", "must be csv, jsonl or pdf")
    return statement, params


_ACTION_NAMES = sql.SQL(
    "WITH RECURSIVE a(action) AS ("
    " SELECT min(action) FROM {events}"
    " UNION ALL"
    " SELECT (SELECT min(e.action) FROM {events} e WHERE e.action > a.action)"
    " FROM a WHERE a.action IS NOT NULL)"
    " SELECT action FROM a WHERE action IS NOT NULL"
).format(events=_EVENTS).as_string(None)


def action_names() -> list[str]:
    """The distinct actions in the log, by a skip scan over the (action, seq) index: a few index
    probes per action instead of reading millions of rows."""
    with connection.cursor() as cursor:
        cursor.execute(_ACTION_NAMES)
        return [row[0] for row in cursor.fetchall()]
