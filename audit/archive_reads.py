"""Reading archived months (audit/archive.py writes them): the list, one month's events with the
online log's filters and keyset paging, one event by seq, and exports that reach into archives.

Auditors and platform admins, through audit/api/archives.py, audit/archive_views.py and the
online log's export; every read is recorded by the caller as audit.viewed / audit.exported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from audit.archive import CSV_COLUMNS, MODEL_FIELDS, parse_period
from audit.archive_files import _file_events, archive_dir
from audit.exports.stream import stream_copy
from audit.models import AuditArchive, AuditEvent
from audit.selectors import MAX_PAGE, AuditFilters
from portal.errors import DomainError, Gone, InvalidPayload


def archive_list() -> list[AuditArchive]:
    return list(AuditArchive.objects.order_by("-first_seq"))


def archive_get(period: Any) -> AuditArchive:
    """A readable archive by its period: 400 for a malformed one, 404 when none, 410 once deleted."""
    parse_period(period)
    archive = AuditArchive.objects.filter(period=period).first()
    if archive is None:
        raise ArchiveNotFound(f"no archive of {period}")
    if archive.deleted_at is not None:
        raise Gone(f"the archive of {period} was deleted after its retention ended")
    return archive


class ArchiveNotFound(DomainError):
    status_code = 404
    default_detail = "no such archive"


def _matches(event: dict[str, Any], moment: datetime, filters: AuditFilters) -> bool:
    if filters.since is not None and moment < filters.since:
        return False
    if filters.until is not None and moment >= filters.until:
        return False
    if filters.action:
        action = event.get("action") or ""
        if filters.action.endswith(".*"):
            if not action.startswith(filters.action[:-1]):
                return False
        elif action != filters.action:
            return False
    if filters.actor and event.get("actor") != filters.actor:
        return False
    if filters.instance and event.get("instance") != filters.instance:
        return False
    return filters.request is None or event.get("request_id") == filters.request


def _ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _matching(archive: AuditArchive, filters: AuditFilters, after: int | None) -> Iterator[dict[str, Any]]:
    """The archive's matching events; checks the file is there before the first one is asked for."""
    path = archive_dir() / archive.file_name
    if not path.is_file():
        raise Gone(f"the archive file of {archive.period} is missing (run manage.py audit_archive verify)")

    def events() -> Iterator[dict[str, Any]]:
        for event in _file_events(path):
            if after is not None and event["seq"] <= after:
                continue
            moment = _ts(event["ts"])
            if _matches(event, moment, filters):
                event["ts"] = moment
                yield event

    return events()


def _as_model(event: dict[str, Any]) -> AuditEvent:
    return AuditEvent(**{name: event.get(name) for name in CSV_COLUMNS}, key_id=event.get("key_id") or "",
                      chain_format=event.get("chain_format") or 1)  # archives from before format 2 hold none


def archive_events_page(archive: AuditArchive, filters: AuditFilters, *, after: int | None = None,
                        limit: int = 50) -> tuple[list[AuditEvent], int | None]:
    """One page of an archived month, oldest first after `after`, with the online log's filters:
    (events as unsaved AuditEvent objects, the next cursor or None). Streams the file (flat memory)."""
    limit = max(1, min(limit, MAX_PAGE))
    rows: list[AuditEvent] = []
    for event in _matching(archive, filters, after):
        rows.append(_as_model(event))
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


def archived_event_get(seq: int) -> AuditEvent | None:
    """One event of a detached month, read from its archive file (None when no readable archive holds
    it): an event's page and API answer for archived seqs as for online ones."""
    archive = (AuditArchive.objects.filter(first_seq__lte=seq, last_seq__gte=seq, detached_at__isnull=False,
                                           deleted_at__isnull=True).first())
    path = archive_dir() / archive.file_name if archive else None
    if path is None or not path.is_file():
        return None
    for event in _file_events(path):
        if event.get("seq") == seq:
            event["ts"] = _ts(event["ts"])
            return _as_model(event)
        if isinstance(event.get("seq"), int) and event["seq"] > seq:
            break
    return None


def archive_export_lines(archive: AuditArchive, filters: AuditFilters, export_format: str, *,
                         header: bool = True) -> Iterator[bytes]:
    """The matching events of an archived month as CSV (the online export's columns) or JSON Lines."""
    if export_format not in ("csv", "jsonl"):
        raise InvalidPayload.field("format", "an archived month exports as csv or jsonl")
    events = _matching(archive, filters, None)  # opens the file now: a missing one is a 410, not a broken stream

    def lines() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")  # as COPY writes CSV
        if export_format == "csv" and header:
            writer.writerow(MODEL_FIELDS)
        for event in events:
            event["ts"] = event["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if export_format == "jsonl":
                buffer.write(json.dumps(event, ensure_ascii=False) + "\n")
            else:
                writer.writerow([json.dumps(event[c], ensure_ascii=False) if c in ("approvers", "details")
                                 else ("" if event.get(c) is None else event.get(c)) for c in MODEL_FIELDS])
            if buffer.tell() >= 1 << 18:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()

    return lines()


def export_with_archives(filters: AuditFilters, export_format: str) -> Iterator[bytes]:
    """The online log's CSV or JSON Lines export of a period (audit/exports/stream.py), preceded by the
    matching events of every detached, undeleted archived month the period overlaps, in seq order:
    an export of a period that lies (partly) in the archive is whole. One CSV header."""
    archives = [archive for archive in AuditArchive.objects.filter(detached_at__isnull=False, deleted_at__isnull=True)
                .order_by("first_seq")
                if (filters.until is None or archive.first_ts < filters.until)
                and (filters.since is None or archive.last_ts >= filters.since)]
    # Opened now: a missing archive file is a 410 before the first byte, not a cut stream.
    parts = [archive_export_lines(archive, filters, export_format, header=index == 0)
             for index, archive in enumerate(archives)]

    def chunks() -> Iterator[bytes]:
        for part in parts:
            yield from part
        online = stream_copy(filters, export_format)
        if parts and export_format == "csv":
            first = next(online, b"")
            yield first[first.find(b"\n") + 1:]  # the header row is COPY's first row: written already
        yield from online

    return chunks()
