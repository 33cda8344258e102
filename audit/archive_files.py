"""An audit archive on disk: where its files live and what they are named, the manifest's fields, the
checksum, and reading its events back. audit/archive.py writes the files, audit/archive_verify.py
checks them, audit/archive_reads.py serves them to auditors; the layout is described in
audit/archive.py's docstring and docs/audit.md ("Retention")."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from django.conf import settings

from audit.models import AuditArchive

FORMAT = "dbportal-audit-archive/1"


def archive_dir() -> Path:
    return Path(settings.AUDIT_ARCHIVE_DIR)


def _names(period: str) -> tuple[str, str, str]:
    base = f"audit-{period}.jsonl.gz"
    return base, f"audit-{period}.manifest.json", base + ".sha256"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_fields(archive: AuditArchive) -> dict[str, Any]:
    return {
        "format": FORMAT, "period": archive.period, "first_seq": archive.first_seq, "last_seq": archive.last_seq,
        "count": archive.count, "first_ts": archive.first_ts.astimezone(UTC).isoformat(),
        "last_ts": archive.last_ts.astimezone(UTC).isoformat(), "prev_hash": archive.prev_hash,
        "last_hash": archive.last_hash, "file": archive.file_name, "sha256": archive.sha256,
        "size_bytes": archive.size_bytes, "created_at": archive.created_at.astimezone(UTC).isoformat(),
        "created_by": archive.created_by, "retain_until": archive.retain_until.astimezone(UTC).isoformat(),
    }


# --- reading an archive file back ------------------------------------------------------------------
class _Number(float):
    """A JSON number that renders back as the exact digits it was read from (jsonb's own text), so
    audit.chain.canonical() of a line read back is byte for byte what the database rendered."""

    text: str

    def __new__(cls, text: str) -> _Number:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text


def _parse_line(line: bytes) -> dict[str, Any]:
    return json.loads(line, parse_float=_Number)


def _file_events(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield _parse_line(line)
