"""Verification of the audit archives: one archive file against its manifest (checksum, the chain inside,
the signed checkpoints in its range), and `verify_all` across every archive and the online log
(`manage.py audit_archive verify`). audit/archive.py checks each file it writes and each archive
before it detaches it with `check_file` / `check_archive`. Hashing is audit.chain's and
audit/keys.py's (`seal_event`), never re-implemented here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from psycopg import sql

from audit import checkpoints, keys
from audit.archive_files import _file_events, _manifest_fields, _names, _sha256_file, archive_dir
from audit.chain import GENESIS_HASH
from audit.models import AuditArchive, AuditEvent
from audit.services import record
from audit.verify import Verification, verify_chain

_HASH_AT = sql.SQL("SELECT prev_hash, hash FROM {events} WHERE seq = %s").format(
    events=sql.Identifier(AuditEvent._meta.db_table))


# --- one archive file ----------------------------------------------------------------------------
@dataclass
class ArchiveCheck:
    """What checking one archive found; `first_broken_seq` names the first event that fails."""

    period: str
    ok: bool = True
    events: int = 0
    first_broken_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str, seq: int | None = None) -> None:
        self.ok = False
        if seq is not None and self.first_broken_seq is None:
            self.first_broken_seq = seq
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_file(path: Path, *, period: str, first_seq: int, last_seq: int, count: int, prev_hash: str,
               last_hash: str, sha256: str | None, anchors: dict[int, tuple[str, str]] | None = None) -> ArchiveCheck:
    """Re-read an archive file: its checksum (when given), then every event's seq, link and hash from
    `prev_hash` to `last_hash`, and at each signed checkpoint's seq (`anchors`: seq -> hash, key id)
    the checkpoint's hash, naming the first event that fails."""
    found = ArchiveCheck(period=period)
    if not path.is_file():
        found.fail(f"{path.name} is missing", first_seq)
        return found
    if sha256 is not None and _sha256_file(path) != sha256:
        found.fail(f"{path.name}: SHA-256 does not match the manifest's")
    expected_seq, previous, previous_rank = first_seq, prev_hash, None
    try:
        for event in _file_events(path):
            found.events += 1
            seq = event.get("seq")
            if seq != expected_seq:
                found.fail(f"seq {expected_seq}: missing from the archive (found {seq})", expected_seq)
                return found
            if event.get("prev_hash") != previous:
                found.fail(f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}", seq)
                return found
            # The event's key, by the rules verify_chain applies online (audit/keys.py): a known key,
            # never an older one (or none) after a newer one, HMAC under it (plain SHA-256 unkeyed).
            key_id = event.get("key_id") or keys.UNKEYED
            rank = keys.rank(key_id)
            if rank is None:
                found.fail(f"seq {seq}: keyed with {key_id!r}, a key not configured here", seq)
                return found
            if previous_rank is not None and rank > previous_rank:
                found.fail(f"seq {seq}: keyed with an older key than seq {seq - 1} (downgraded)", seq)
                return found
            if keys.seal_event(keys.by_id(key_id) if key_id else None, event) != event.get("hash"):
                found.fail(f"seq {seq}: the event's content does not match its hash (altered)", seq)
                return found
            anchor = (anchors or {}).get(seq)
            if anchor is not None and anchor != (event.get("hash"), event.get("key_id") or keys.UNKEYED):
                found.fail(f"seq {seq} does not match its signed checkpoint (the archive was rewritten)", seq)
                return found
            previous, previous_rank, expected_seq = event["hash"], rank, seq + 1
    except (OSError, EOFError, ValueError) as exc:  # gzip, zlib and JSON errors: a damaged file
        found.fail(f"{path.name} is unreadable after seq {expected_seq - 1}: {type(exc).__name__}", expected_seq)
        return found
    if found.events != count or expected_seq != last_seq + 1:
        found.fail(f"the archive holds {found.events} events ending at seq {expected_seq - 1}; its manifest says "
                   f"{count} ending at seq {last_seq}", expected_seq if expected_seq <= last_seq else last_seq)
    elif previous != last_hash:
        found.fail(f"seq {last_seq}: the last hash does not match the manifest's", last_seq)
    return found


def checkpoint_anchors() -> dict[int, tuple[str, str]]:
    """seq -> (hash, key id) of every valid signed checkpoint kept outside the database."""
    return {c.seq: (c.hash, c.key_id) for c in checkpoints.load().valid if c.seq > 0}


def check_archive(archive: AuditArchive, anchors: dict[int, tuple[str, str]] | None = None) -> ArchiveCheck:
    """A recorded archive: its file against the manifest row (and the signed checkpoints in its range,
    when given), and the manifest and checksum files."""
    directory = archive_dir()
    found = check_file(directory / archive.file_name, period=archive.period, first_seq=archive.first_seq,
                       last_seq=archive.last_seq, count=archive.count, prev_hash=archive.prev_hash,
                       last_hash=archive.last_hash, sha256=archive.sha256, anchors=anchors)
    _, manifest_name, checksum_name = _names(archive.period)
    try:
        manifest = json.loads((directory / manifest_name).read_text())
        if manifest != _manifest_fields(archive):
            found.fail(f"{manifest_name} differs from the manifest row")
    except (OSError, ValueError):
        found.fail(f"{manifest_name} is missing or unreadable")
    try:
        if (directory / checksum_name).read_text() != f"{archive.sha256}  {archive.file_name}\n":
            found.fail(f"{checksum_name} differs from the manifest row")
    except OSError:
        found.fail(f"{checksum_name} is missing")
    return found


# --- verification across archive and online ------------------------------------------------------
@dataclass
class FullVerification:
    ok: bool
    archives: list[dict[str, Any]]
    online: dict[str, Any]
    first_broken_seq: int | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_all() -> FullVerification:
    """Every archive (its file, unless deleted after retention: then its manifest row's hashes still
    link), that consecutive archives and the online log link up, the signed checkpoints that fall in
    archived ranges, and the online chain (verify_chain, which starts after the last detached
    archive and checks the checkpoints from there). Records nothing itself (see `verify_all_record`)."""
    checks: list[dict[str, Any]] = []
    anchors = checkpoint_anchors()
    broken: int | None = None
    problem = ""
    expected_seq, expected_prev = 1, GENESIS_HASH
    for archive in AuditArchive.objects.order_by("first_seq"):
        if broken is None and (archive.first_seq != expected_seq or archive.prev_hash != expected_prev):
            broken = expected_seq
            problem = (f"period {archive.period} (seq {archive.first_seq}) does not continue seq {expected_seq - 1} "
                       "of the previous archive")
        anchor = anchors.get(archive.last_seq)
        if broken is None and anchor is not None and anchor[0] != archive.last_hash:
            broken = archive.last_seq
            problem = f"archive {archive.period}: seq {archive.last_seq} does not match its signed checkpoint"
        if archive.deleted_at is None:
            found = check_archive(archive, anchors)
            if broken is None and not found.ok:
                broken = found.first_broken_seq or archive.first_seq
                problem = f"archive {archive.period}: {'; '.join(found.problems)}"
            checks.append({**found.as_dict(), "status": archive.status})
        else:
            checks.append({"period": archive.period, "ok": True, "status": "deleted", "events": archive.count,
                           "first_broken_seq": None, "problems": []})
        expected_seq, expected_prev = archive.last_seq + 1, archive.last_hash
    online: Verification = verify_chain()
    detached = AuditArchive.objects.filter(detached_at__isnull=False).order_by("-last_seq").first()
    undetached = AuditArchive.objects.filter(detached_at__isnull=True).order_by("first_seq").first()
    if broken is None and undetached is not None and (detached is None or undetached.first_seq == detached.last_seq + 1):
        # An archive whose rows are still online must match them at its ends.
        with connection.cursor() as cursor:
            cursor.execute(_HASH_AT, [undetached.last_seq])
            row = cursor.fetchone()
        if row is None or row[1] != undetached.last_hash:
            broken, problem = undetached.last_seq, f"archive {undetached.period} does not match the online log"
    if broken is None and not online.ok:
        broken, problem = online.first_broken_seq, online.problem
    return FullVerification(ok=broken is None, archives=checks, online=online.as_dict(), first_broken_seq=broken,
                            problem=problem)


def verify_all_record(*, actor: Any, actor_ip: str | None = None) -> FullVerification:
    result = verify_all()
    with transaction.atomic():
        record("audit.verified", actor=actor, actor_ip=actor_ip, object_type="audit_log",
               outcome="ok" if result.ok else "broken",
               details={"scope": "archives+online", "ok": result.ok, "first_broken_seq": result.first_broken_seq,
                        "problem": result.problem, "archives": len(result.archives),
                        "head_seq": result.online["head_seq"], "head_hash": result.online["head_hash"]})
    return result
