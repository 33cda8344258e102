"""Signed checkpoints of the chain, written outside the portal database.

A checkpoint is one small JSON file: the seq and hash of the chain's head at that moment, the id
of the head event's key (`key_id`) and of the key that chains every later event and signs this
file (`next_key_id`), the time, its number, and the SHA-256 of the previous checkpoint file
(`prev_digest`): the files form a chain of their own, so a deleted or edited file is found.

Signature: Ed25519 over the file's body (the JSON without `signature`, keys sorted, compact),
with the key pair derived from the audit key `next_key_id` (audit/keys.py). Why Ed25519 and not
an HMAC: an auditor (or a second system) checks a checkpoint with the public key alone
(`manage.py audit_keys` prints them), holding nothing that could forge one.

Storage: behind CheckpointStore (put once, get, list). The one driver here is a directory
(PORTAL_AUDIT_CHECKPOINT_DIR, default var/audit-checkpoints; may be a WORM mount): files are
created with O_EXCL, fsynced with their directory, made read-only, and never overwritten. An
S3-compatible driver would implement the same three methods (with object lock); it is not
written, because nothing on this machine could test it for real.

Who writes: only code holding the head row lock (the chainer, audit/chainer.py), so two writers
never race for a number. When: the chainer before it first chains with a new key (the "key
boundary": an upgrade from the unkeyed chain, or a rotation), and the beat task
`audit.checkpoint` every PORTAL_AUDIT_CHECKPOINT_EVENTS events or PORTAL_AUDIT_CHECKPOINT_MINUTES
minutes. Each written checkpoint is then recorded as an `audit.checkpointed` event (file name,
digest): verification finds a newest file deleted. That event does not make the next checkpoint
due by itself (checkpoint_due() ignores those events), so an idle log gets no endless series.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from django.conf import settings

from audit import keys

VERSION = 1
_NAME = re.compile(r"^(\d{10})-(\d{20})\.json$")


class CheckpointStore(Protocol):
    """Where checkpoint files live. put() never overwrites (FileExistsError)."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def names(self) -> list[str]: ...


class DirectoryStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def put(self, name: str, data: bytes) -> None:
        if not _NAME.match(name):
            raise ValueError(f"not a checkpoint file name: {name!r}")
        self.path.mkdir(parents=True, exist_ok=True, mode=0o750)
        target = self.path / name
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        directory = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a crash too
        finally:
            os.close(directory)

    def get(self, name: str) -> bytes:
        if not _NAME.match(name):
            raise FileNotFoundError(name)
        return (self.path / name).read_bytes()

    def names(self) -> list[str]:
        try:
            return sorted(entry for entry in os.listdir(self.path) if _NAME.match(entry))
        except FileNotFoundError:
            return []


def store() -> CheckpointStore:
    return DirectoryStore(settings.AUDIT_CHECKPOINT_DIR)


@dataclass(frozen=True)
class Checkpoint:
    number: int
    seq: int
    hash: str
    key_id: str  # the key of the event at seq ("" unkeyed; at seq 0, the start)
    next_key_id: str  # the key of every later event at least this new; it signed the file
    time: str
    prev_digest: str
    signature: str
    name: str
    digest: str  # SHA-256 of the file's bytes

    def body(self) -> dict:
        return {"version": VERSION, "number": self.number, "seq": self.seq, "hash": self.hash,
                "key_id": self.key_id, "next_key_id": self.next_key_id, "time": self.time,
                "prev_digest": self.prev_digest}


def _encode(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def file_name(number: int, seq: int) -> str:
    return f"{number:010d}-{seq:020d}.json"


def latest(target: CheckpointStore | None = None) -> Checkpoint | None:
    """The newest checkpoint file, parsed (not verified)."""
    target = target or store()
    names = target.names()
    return parse(names[-1], target.get(names[-1])) if names else None


def parse(name: str, data: bytes) -> Checkpoint:
    document = json.loads(data)
    return Checkpoint(number=int(document["number"]), seq=int(document["seq"]), hash=str(document["hash"]),
                      key_id=str(document["key_id"]), next_key_id=str(document["next_key_id"]),
                      time=str(document["time"]), prev_digest=str(document["prev_digest"]),
                      signature=str(document["signature"]), name=name, digest=hashlib.sha256(data).hexdigest())


def write(seq: int, head_hash: str, head_key_id: str, key: keys.AuditKey,
          target: CheckpointStore | None = None) -> Checkpoint:
    """Write the next checkpoint (call with the head row locked). Raises when the store fails."""
    target = target or store()
    previous = latest(target)
    number = previous.number + 1 if previous else 1
    body = {"version": VERSION, "number": number, "seq": seq, "hash": head_hash, "key_id": head_key_id,
            "next_key_id": key.id, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "prev_digest": previous.digest if previous else ""}
    signature = base64.b64encode(key.signing_key.sign(_encode(body))).decode()
    data = json.dumps({**body, "signature": signature}, sort_keys=True, indent=1).encode() + b"\n"
    name = file_name(number, seq)
    target.put(name, data)
    return parse(name, data)


@dataclass
class Loaded:
    """Every checkpoint file, checked on its own and as a chain of files."""

    valid: list[Checkpoint]  # signature good, in order, linked; up to the first bad one
    problems: list[str]
    digests: dict[str, str]  # file name -> digest, of every readable file


def verify_signature(checkpoint: Checkpoint) -> bool:
    key = keys.by_id(checkpoint.next_key_id)
    if key is None:
        return False
    try:
        key.public_key.verify(base64.b64decode(checkpoint.signature), _encode(checkpoint.body()))
    except (InvalidSignature, ValueError):
        return False
    return True


def load(target: CheckpointStore | None = None) -> Loaded:
    """Read and check every file: readable, signed by a configured key, numbered 1, 2, 3... with
    each prev_digest the digest of the file before, seq never decreasing. The valid list stops at
    the first file that fails (what follows cannot be trusted to link)."""
    target = target or store()
    loaded = Loaded(valid=[], problems=[], digests={})
    previous: Checkpoint | None = None
    trusted = True
    for name in target.names():
        try:
            data = target.get(name)
            checkpoint = parse(name, data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            loaded.problems.append(f"checkpoint file {name} is unreadable ({type(exc).__name__})")
            trusted = False
            continue
        loaded.digests[name] = checkpoint.digest
        expected_number = previous.number + 1 if previous else 1
        if file_name(checkpoint.number, checkpoint.seq) != name:
            problem = f"checkpoint file {name}: its name does not match its content (edited or renamed)"
        elif not verify_signature(checkpoint):
            problem = (f"checkpoint {checkpoint.number} ({name}): the signature does not verify with key "
                       f"{checkpoint.next_key_id!r} (edited, or signed by a key not configured here)")
        elif checkpoint.number != expected_number:
            problem = (f"checkpoint {expected_number} is missing (deleted?): the next file is number "
                       f"{checkpoint.number}")
        elif previous is not None and checkpoint.prev_digest != previous.digest:
            problem = (f"checkpoint {checkpoint.number} ({name}) does not link to checkpoint {previous.number} "
                       "(a file was replaced)")
        elif previous is not None and checkpoint.seq < previous.seq:
            problem = f"checkpoint {checkpoint.number} goes back to seq {checkpoint.seq}"
        else:
            problem = ""
        if problem:
            loaded.problems.append(problem)
            trusted = False
        elif trusted:
            loaded.valid.append(checkpoint)
        previous = checkpoint
    return loaded
