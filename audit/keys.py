"""The audit chain's keys: held outside the portal database, newest first, rotatable.

Each key is 32 random bytes, written as urlsafe base64 in PORTAL_AUDIT_KEYS (comma-separated,
newest first) or, when that is unset, in the generated file var/audit.key (demo and
development; `manage.py rotate_audit_key` puts a new key first there). A key's id is derived from
the key itself (the first 8 hex digits of a SHA-256 over a label and the key), so an id can never
name the wrong key, and it is public: events store it (`key_id`) and checkpoints carry it.

What a key does:
- event hashes: hash = HMAC-SHA256(key, the event's message), 64 hex digits (audit/chain.py: the
  message is the event's COPY line in chain format 2, prev_hash + "\\n" + canonical form in format 1);
- checkpoint signatures: an Ed25519 key pair derived from the key (HKDF-SHA256, its own label), so
  an auditor checks a checkpoint with the public key alone (`manage.py audit_keys` prints them).

Order matters: a key's rank is its position in the list (0 = newest). The chain only ever moves to
a newer key (verification refuses an event keyed with an older key than the event before it, and
an unkeyed event after a keyed one): a database administrator cannot downgrade events to plain
SHA-256 hashes, which they could recompute, without verification naming the first such event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

UNKEYED = ""  # the key id of events chained before keys existed (plain SHA-256)
KEY_FILE = "audit.key"  # under the state folder, when PORTAL_AUDIT_KEYS is unset (portal.embedded.AUDIT_KEY_FILE)
KEY_BYTES = 32
_ID_LABEL = b"dbportal audit key id\n"
_SIGNING_LABEL = b"dbportal audit checkpoint signing key"


@dataclass(frozen=True)
class AuditKey:
    secret: bytes = field(repr=False)

    @cached_property
    def id(self) -> str:
        return hashlib.sha256(_ID_LABEL + self.secret).hexdigest()[:8]

    @cached_property
    def pads(self) -> tuple[object, object]:
        """HMAC-SHA256's inner and outer hash states after the key block, computed once: each MAC
        then costs two copies and two updates (RFC 2104 written out; equal to hmac.new)."""
        block = self.secret.ljust(64, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        return inner, outer

    def mac(self, message: bytes) -> str:
        inner, outer = self.pads
        h = inner.copy()  # type: ignore[attr-defined]
        h.update(message)
        o = outer.copy()  # type: ignore[attr-defined]
        o.update(h.digest())
        return o.hexdigest()

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SIGNING_LABEL).derive(self.secret)
        return Ed25519PrivateKey.from_private_bytes(seed)

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @cached_property
    def public_key_text(self) -> str:
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()


def parse(text: str, *, name: str = "PORTAL_AUDIT_KEYS") -> AuditKey:
    try:
        secret = base64.urlsafe_b64decode(text.strip().encode())
    except (ValueError, TypeError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise ImproperlyConfigured(f"{name}: each key must be {KEY_BYTES} bytes in urlsafe base64 "
                                   "(manage.py rotate_audit_key --print makes one)")
    return AuditKey(secret)


def generate() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


_cache: dict[tuple[str, ...], tuple[AuditKey, ...]] = {}


def keyring() -> tuple[AuditKey, ...]:
    """The configured keys, newest first (settings.AUDIT_KEYS; parsed once per distinct list)."""
    texts = tuple(settings.AUDIT_KEYS)
    found = _cache.get(texts)
    if found is None:
        found = tuple(parse(text) for text in texts)
        if len({key.id for key in found}) != len(found):
            raise ImproperlyConfigured("PORTAL_AUDIT_KEYS: a key is listed twice")
        _cache[texts] = found
    return found


def current() -> AuditKey | None:
    """The key new events are chained with (None: no key configured; events stay unkeyed)."""
    ring = keyring()
    return ring[0] if ring else None


def by_id(key_id: str) -> AuditKey | None:
    for key in keyring():
        if key.id == key_id:
            return key
    return None


def rank(key_id: str) -> int | None:
    """0 for the newest key, larger for older ones; unkeyed ranks after every key; None when the id
    is not configured here (a key removed too early, or a forged id)."""
    ring = keyring()
    if key_id == UNKEYED:
        return len(ring)
    for index, key in enumerate(ring):
        if key.id == key_id:
            return index
    return None


def seal(key: AuditKey | None, message: bytes) -> str:
    """The hash of an event's message (audit.chain.message): HMAC-SHA256 under `key`, or plain
    SHA-256 for an unkeyed event."""
    return hashlib.sha256(message).hexdigest() if key is None else key.mac(message)


def seal_event(key: AuditKey | None, event: dict) -> str:
    """The hash an event (as exported, archived or loaded: audit.chain.message) carries under `key`."""
    from audit.chain import message  # audit.chain renders; this module only MACs

    return seal(key, message(event))


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
