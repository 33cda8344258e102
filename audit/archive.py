"""Retention of the audit log (PCI DSS v4 10.5.1): monthly archives, detaching, deletion after retention.

What happens, in order, and who may do it:

1. **Archive** (`archive_next`, run by beat's `audit.archive_run` as `system`, or by a platform admin
   through `manage.py audit_archive run --actor NAME`): the oldest whole UTC calendar month that lies
   before the online window (the current month and the `AUDIT_ONLINE_MONTHS` before it) and is not
   yet archived is exported, one contiguous seq range, with `COPY` to a gzip JSON Lines file under
   `AUDIT_ARCHIVE_DIR` (`audit-YYYY-MM.jsonl.gz`, one event per line with its `prev_hash` and
   `hash`), plus a manifest (`audit-YYYY-MM.manifest.json`) and a checksum file
   (`audit-YYYY-MM.jsonl.gz.sha256`, `sha256sum -c` format). Each file is written to a temporary
   name, fsynced and hard-linked to its final name, which fails when that name exists: an archive
   is never overwritten (a re-run after a crash adopts a byte-identical file and refuses any other).
   The file is then re-read and its chain recomputed from the manifest's first `prev_hash` to its
   last `hash`; only a verified file gets its manifest row (AuditArchive) and `audit.archived`.
2. **Detach** (`detach`): the file is verified again against the manifest row and the online rows,
   then the month's rows leave `audit_auditevent` in one transaction with `audit.detached`. The
   table's DELETE guard (migration audit/0005) allows exactly that: rows whose seq lies in a
   recorded, undeleted archive and that are older than three whole months.
3. **Delete** (`archive_delete`): an archive is kept until `retain_until` (the end of its month plus
   `AUDIT_RETENTION_MONTHS`, at least 12); then beat (or an admin) deletes its files, recorded as
   `audit.archive_deleted`. Before that the deletion is refused (and recorded, outcome `refused`),
   by this module and by the manifest table's guard in the database. The manifest row stays forever.

Nobody archives, detaches or deletes through the web or the API: they only read (auditors and
platform admins: `archive_list`, `archive_events_page`, `archive_export_lines` in audit/archive_reads.py). Verification spans
archive and online: `audit.verify.verify_chain` starts after the last detached archive with its last
hash, and `verify_all` (audit/archive_verify.py, which also checks each file this module writes or
detaches) checks every archive file (checksum, internal chain) and that consecutive archives and the
online log link up. The files' names, manifest fields and checksum are audit/archive_files.py's.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from audit.archive_files import _manifest_fields, _names, _sha256_file, archive_dir
from audit.archive_verify import _HASH_AT, check_archive, check_file, checkpoint_anchors
from audit.chain import GENESIS_HASH, TS_SQL
from audit.models import AuditArchive, AuditEvent
from audit.services import SYSTEM, record
from audit.siem import forwarded_up_to
from portal.errors import Conflict, Gone, InvalidPayload, PolicyViolation
from portal.personas import is_admin

MIN_RETENTION_MONTHS = 12  # PCI DSS v4 10.5.1
MIN_ONLINE_MONTHS = 3  # the same: three months immediately available (the DELETE guard holds this too)
# pg_advisory_lock key: one archiving run at a time (beat and an operator may overlap).
_LOCK_KEY = 0x61756469_74617263  # "auditarc"

_EVENTS = sql.Identifier(AuditEvent._meta.db_table)
# One JSON object per line, every column of the event (jsonb values embedded as JSON), the way
# the JSON Lines export writes them; CSV mode with a quote and delimiter JSON never holds raw.
_COPY_MONTH = sql.SQL(
    "COPY (SELECT json_build_object('seq', seq, 'ts', {ts}, 'actor', actor, 'actor_ip', host(actor_ip), "
    "'action', action, 'object_type', object_type, 'object_id', object_id, 'instance', instance, "
    "'database', database, 'statement', statement, 'request_id', request_id, 'approvers', approvers, "
    "'outcome', outcome, 'details', details, 'prev_hash', prev_hash, 'hash', hash, 'key_id', key_id, "
    "'chain_format', chain_format)::text "
    "FROM {events} WHERE seq BETWEEN %s AND %s ORDER BY seq) "
    "TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
).format(ts=sql.SQL(TS_SQL), events=_EVENTS)
_MONTH_RANGE = sql.SQL(
    "SELECT max(seq), count(*), min(ts), max(ts) FROM {events} WHERE seq >= %s AND ts < %s"
).format(events=_EVENTS)
_FIRST_ONLINE = sql.SQL("SELECT seq, ts, prev_hash FROM {events} WHERE seq >= %s ORDER BY seq LIMIT 1").format(
    events=_EVENTS)
_ONLINE_RANGE = sql.SQL(
    "SELECT count(*), min(seq), max(seq) FROM {events} WHERE seq BETWEEN %s AND %s").format(events=_EVENTS)
_DETACH = sql.SQL("DELETE FROM {events} WHERE seq BETWEEN %s AND %s").format(events=_EVENTS)

CSV_COLUMNS = ("seq", "ts", "actor", "actor_ip", "action", "object_type", "object_id", "instance", "database",
               "statement", "request_id", "approvers", "outcome", "details", "prev_hash", "hash")
MODEL_FIELDS = (*CSV_COLUMNS, "key_id", "chain_format")


class ArchiveError(Exception):
    """An archive step could not be done safely; nothing was detached or deleted."""


# --- configuration and calendar ----------------------------------------------------------------
def online_months() -> int:
    months = int(settings.AUDIT_ONLINE_MONTHS)
    if months < MIN_ONLINE_MONTHS:
        raise ImproperlyConfigured(f"PORTAL_AUDIT_ONLINE_MONTHS={months} is under {MIN_ONLINE_MONTHS} (PCI DSS 10.5.1)")
    return months


def retention_months() -> int:
    months = int(settings.AUDIT_RETENTION_MONTHS)
    if months < MIN_RETENTION_MONTHS:
        raise ImproperlyConfigured(
            f"PORTAL_AUDIT_RETENTION_MONTHS={months} is under {MIN_RETENTION_MONTHS} (PCI DSS 10.5.1)")
    return months


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + (moment.month - 1) + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


def online_cutoff(now: datetime | None = None) -> datetime:
    """Months starting before this moment may be archived and detached."""
    return add_months(month_start(now or timezone.now()), -online_months())


def _period(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def parse_period(text: Any) -> datetime:
    """'YYYY-MM' → the month's first moment (UTC); anything else is a 400 naming `period`."""
    value = str(text or "")
    try:
        if len(value) != 7 or value[4] != "-" or not (value[:4] + value[5:]).isdigit():
            raise ValueError
        return datetime(int(value[:4]), int(value[5:]), 1, tzinfo=UTC)
    except ValueError:
        raise InvalidPayload.field("period", "must be a month as YYYY-MM (2026-08)") from None


# --- who may run what ------------------------------------------------------------------------
def _operator(actor: Any) -> str:
    """Archiving and deleting run as the system (beat) or a platform admin (the command's --actor)."""
    if actor is None or actor == SYSTEM:
        return SYSTEM
    if isinstance(actor, str) or not getattr(actor, "is_active", False) or not is_admin(actor):
        raise PolicyViolation("only the system or a platform admin archives or deletes the audit log")
    return actor.username


# --- files -------------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: Path, final: Path) -> None:
    """Give the fsynced temporary file its final name, never replacing one: link() fails when the
    name exists (rename would overwrite). An existing byte-identical file (a re-run after a crash
    between the file and its manifest row) is adopted; any other is refused."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        same = _sha256_file(tmp) == _sha256_file(final)
        tmp.unlink()
        if not same:
            raise ArchiveError(f"{final} exists with other content; an archive is never overwritten") from None
        return
    tmp.unlink()
    _fsync_dir(final.parent)


def _temp(directory: Path, name: str) -> Path:
    return directory / f".{name}.{uuid.uuid4().hex}.tmp"


def _create(path: Path) -> Any:
    """A new file, read-only once closed (0440: an archive is written once, never edited in place)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440), "wb")


def _write_bytes(directory: Path, name: str, data: bytes) -> None:
    tmp = _temp(directory, name)
    with _create(tmp) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    _place(tmp, directory / name)


def _export_month(directory: Path, name: str, lo: int, hi: int) -> None:
    """COPY the seq range straight into a gzip file (mtime 0, no file name in the header: the same
    events always give the same bytes, which is what lets a re-run adopt an earlier file)."""
    tmp = _temp(directory, name)
    with _create(tmp) as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as packed:
            with connection.cursor() as cursor, cursor.cursor.copy(_COPY_MONTH, (lo, hi)) as copy:
                for data in copy:
                    packed.write(bytes(data))
        raw.flush()
        os.fsync(raw.fileno())
    _place(tmp, directory / name)


# --- archive, detach, delete ---------------------------------------------------------------------
def _next_range(now: datetime) -> tuple[str, int, int, int, datetime, datetime, str] | None:
    """The oldest whole month not yet archived that lies before the online window, as
    (period, first seq, last seq, count, first ts, last ts, prev_hash of the first event)."""
    last = AuditArchive.objects.order_by("-last_seq").first()
    start = last.last_seq + 1 if last else 1
    with connection.cursor() as cursor:
        cursor.execute(_FIRST_ONLINE, [start])
        row = cursor.fetchone()
        if row is None:
            return None
        first_seq, first_ts, prev_hash = row
        if first_seq != start:
            raise ArchiveError(f"seq {start} is missing from the online log (it starts at {first_seq})")
        begins = month_start(first_ts)
        if begins >= online_cutoff(now):
            return None
        cursor.execute(_MONTH_RANGE, [start, add_months(begins, 1)])
        last_seq, count, low_ts, high_ts = cursor.fetchone()
    return _period(begins), start, last_seq, count, low_ts, high_ts, prev_hash


def archive_next(*, actor: Any = SYSTEM, now: datetime | None = None) -> AuditArchive | None:
    """Archive the next due month (see the module's docstring); None when none is due."""
    operator = _operator(actor)
    now = now or timezone.now()
    retain = retention_months()
    due = _next_range(now)
    if due is None:
        return None
    period, first_seq, last_seq, count, first_ts, last_ts, prev_hash = due
    previous = AuditArchive.objects.order_by("-last_seq").first()
    expected_prev = previous.last_hash if previous else GENESIS_HASH
    if count != last_seq - first_seq + 1 or prev_hash != expected_prev:
        _failed("audit.archived", operator, period, first_seq, last_seq,
                "the online log does not continue the previous archive (gap or broken link)")
        raise ArchiveError(f"period {period}: seq {first_seq}-{last_seq} is not a gap-free range linked to the "
                           "previous archive")
    directory = archive_dir()
    directory.mkdir(parents=True, exist_ok=True)
    data_name, manifest_name, checksum_name = _names(period)
    _export_month(directory, data_name, first_seq, last_seq)
    with connection.cursor() as cursor:
        cursor.execute(_HASH_AT, [last_seq])
        last_hash = cursor.fetchone()[1]
    found = check_file(directory / data_name, period=period, first_seq=first_seq, last_seq=last_seq, count=count,
                       prev_hash=prev_hash, last_hash=last_hash, sha256=None, anchors=checkpoint_anchors())
    if not found.ok:
        _failed("audit.archived", operator, period, first_seq, last_seq, "; ".join(found.problems))
        raise ArchiveError(f"period {period}: the written archive did not verify: {'; '.join(found.problems)}")
    archive = AuditArchive(
        period=period, first_seq=first_seq, last_seq=last_seq, count=count, first_ts=first_ts, last_ts=last_ts,
        prev_hash=prev_hash, last_hash=last_hash, file_name=data_name, sha256=_sha256_file(directory / data_name),
        size_bytes=(directory / data_name).stat().st_size, created_at=now, created_by=operator, verified_at=now,
        retain_until=add_months(month_start(first_ts), 1 + retain))
    manifest_path = directory / manifest_name
    if manifest_path.exists():
        # A re-run after a crash before the row committed: the earlier manifest is kept if it
        # describes the same file (its created_at stands), else refused by _place below.
        try:
            earlier = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            earlier = {}
        if {k: v for k, v in earlier.items() if k != "created_at"} == {
                k: v for k, v in _manifest_fields(archive).items() if k not in ("created_at",)}:
            archive.created_at = archive.verified_at = datetime.fromisoformat(earlier["created_at"])
    _write_bytes(directory, manifest_name, (json.dumps(_manifest_fields(archive), indent=2) + "\n").encode())
    _write_bytes(directory, checksum_name, f"{archive.sha256}  {data_name}\n".encode())
    with transaction.atomic():
        archive.save(force_insert=True)
        record("audit.archived", actor=operator, object_type="audit_archive", object_id=period, outcome="ok",
               details=_event_details(archive))
    return archive


def _event_details(archive: AuditArchive) -> dict[str, Any]:
    return {"period": archive.period, "first_seq": archive.first_seq, "last_seq": archive.last_seq,
            "count": archive.count, "sha256": archive.sha256, "file": archive.file_name,
            "retain_until": archive.retain_until.astimezone(UTC).isoformat()}


def _failed(action: str, operator: str, period: str, first_seq: int, last_seq: int, reason: str,
            outcome: str = "failed", sha256: str = "") -> None:
    with transaction.atomic():
        record(action, actor=operator, object_type="audit_archive", object_id=period, outcome=outcome,
               details={"period": period, "first_seq": first_seq, "last_seq": last_seq, "sha256": sha256,
                        "reason": reason[:500]})


def detach(archive: AuditArchive, *, actor: Any = SYSTEM, now: datetime | None = None) -> int:
    """Remove an archived month's rows from the online table after verifying the archive again (the
    file against its manifest row, and the online rows against the file's ends). Returns the count."""
    operator = _operator(actor)
    now = now or timezone.now()
    if archive.detached_at is not None:
        raise Conflict(f"period {archive.period} is already detached")
    if month_start(archive.first_ts) >= online_cutoff(now):
        raise Conflict(f"period {archive.period} is inside the online window")
    earlier = AuditArchive.objects.filter(last_seq__lt=archive.first_seq, detached_at__isnull=True).first()
    if earlier is not None:
        raise Conflict(f"period {earlier.period} must be detached first (the online log stays one range)")
    if not _forwarded(archive):
        raise Conflict(f"period {archive.period} is not yet acknowledged by every SIEM collector (audit/siem.py "
                       "reads the online table); it is detached once they catch up")
    found = check_archive(archive, checkpoint_anchors())
    if found.ok:
        with connection.cursor() as cursor:
            cursor.execute(_ONLINE_RANGE, [archive.first_seq, archive.last_seq])
            online_count, _, _ = cursor.fetchone()
            cursor.execute(_HASH_AT, [archive.first_seq])
            first_row = cursor.fetchone()
            cursor.execute(_HASH_AT, [archive.last_seq])
            last_row = cursor.fetchone()
        if (online_count != archive.count or first_row is None or last_row is None
                or first_row[0] != archive.prev_hash or last_row[1] != archive.last_hash):
            found.fail("the online rows no longer match the archive's ends and count", archive.first_seq)
    if not found.ok:
        _failed("audit.detached", operator, archive.period, archive.first_seq, archive.last_seq,
                "; ".join(found.problems), sha256=archive.sha256)
        raise ArchiveError(f"period {archive.period} was not detached: {'; '.join(found.problems)}")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_DETACH, [archive.first_seq, archive.last_seq])
            removed = cursor.rowcount
        if removed != archive.count:
            raise ArchiveError(f"period {archive.period}: {removed} rows matched, the archive holds {archive.count}")
        archive.detached_at = now
        archive.save(update_fields=["detached_at"])
        record("audit.detached", actor=operator, object_type="audit_archive", object_id=archive.period,
               outcome="ok", details={**_event_details(archive), "detached": removed})
    return removed


def _forwarded(archive: AuditArchive) -> bool:
    """Every forwarding SIEM collector has acknowledged the archive's events (or none forwards)."""
    acknowledged = forwarded_up_to()
    return acknowledged is None or acknowledged >= archive.last_seq


class RetentionNotOver(PolicyViolation):
    default_detail = "the archive's retention has not ended"


def archive_delete(*, period: str, actor: Any = SYSTEM, now: datetime | None = None) -> AuditArchive:
    """Delete an archive's files once its retention has ended, recorded as audit.archive_deleted.
    Before `retain_until` the deletion is refused (RetentionNotOver) and the refusal recorded."""
    operator = _operator(actor)
    now = now or timezone.now()
    parse_period(period)
    archive = AuditArchive.objects.filter(period=period).first()
    if archive is None:
        raise InvalidPayload.field("period", "no archive of this month")
    if archive.deleted_at is not None:
        raise Gone(f"period {period} was deleted on {archive.deleted_at.date().isoformat()}")
    if now < archive.retain_until or archive.detached_at is None:
        reason = (f"retained until {archive.retain_until.astimezone(UTC).isoformat()}" if now < archive.retain_until
                  else "its events are still online (detach first)")
        _failed("audit.archive_deleted", operator, period, archive.first_seq, archive.last_seq, reason,
                outcome="refused", sha256=archive.sha256)
        raise RetentionNotOver(f"period {period}: {reason}")
    with transaction.atomic():
        archive.deleted_at, archive.deleted_by = now, operator
        # The manifest table's guard refuses this too before retain_until (by the database's clock).
        archive.save(update_fields=["deleted_at", "deleted_by"])
        record("audit.archive_deleted", actor=operator, object_type="audit_archive", object_id=period,
               outcome="ok", details=_event_details(archive))
        transaction.on_commit(lambda: _remove_files(period))
    return archive


def _remove_files(period: str) -> None:
    directory = archive_dir()
    for name in _names(period):
        (directory / name).unlink(missing_ok=True)
    _fsync_dir(directory)


@dataclass
class RunReport:
    archived: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    waiting_for_siem: list[str] = field(default_factory=list)  # archived, detached once forwarded
    busy: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(*, actor: Any = SYSTEM, now: datetime | None = None) -> RunReport:
    """What beat runs monthly (and `manage.py audit_archive run`): archive every due month, oldest
    first, detach each verified archive, delete the archives whose retention has ended."""
    operator_check = _operator(actor)  # refuse early, before taking the lock
    del operator_check
    report = RunReport()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY])
        if not cursor.fetchone()[0]:
            report.busy = True
            return report
    try:
        while (archive := archive_next(actor=actor, now=now)) is not None:
            report.archived.append(archive.period)
        cutoff = online_cutoff(now)
        for archive in AuditArchive.objects.filter(detached_at__isnull=True, deleted_at__isnull=True):
            if month_start(archive.first_ts) >= cutoff:
                break
            if not _forwarded(archive):
                # A collector that is down must find its backlog still online; later months wait too,
                # so the online log stays one range. Not an event: nothing was decided, only postponed.
                report.waiting_for_siem.append(archive.period)
                continue
            if report.waiting_for_siem:
                report.waiting_for_siem.append(archive.period)
                continue
            detach(archive, actor=actor, now=now)
            report.detached.append(archive.period)
        moment = now or timezone.now()
        for archive in AuditArchive.objects.filter(deleted_at__isnull=True, detached_at__isnull=False,
                                                   retain_until__lte=moment):
            archive_delete(period=archive.period, actor=actor, now=moment)
            report.deleted.append(archive.period)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return report
