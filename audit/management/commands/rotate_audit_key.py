"""manage.py rotate_audit_key: put a new audit chain key in force (docs/operations.md, "Keys").

    rotate_audit_key --generate   print a new key (32 random bytes, urlsafe base64) and nothing else
    rotate_audit_key              apply: the first key of PORTAL_AUDIT_KEYS chains every later event

Rotation, like PORTAL_FERNET_KEYS: put the new key FIRST in PORTAL_AUDIT_KEYS on every process
(web, worker, beat), keep the old keys after it (they still verify older events), restart, then
run this command once. It writes the key boundary checkpoint (audit/checkpoints.py) and records
audit.key_rotated. Without PORTAL_AUDIT_KEYS (demo and development), --generate puts the new key
first in var/audit.key instead and applies it at once. Prints every configured key's id and its
checkpoint public key (Ed25519, base64) for auditors.
"""

from __future__ import annotations

import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit import keys
from audit.services import audit_key_rotate
from portal.conf import Config


class Command(BaseCommand):
    help = "Apply the first key of PORTAL_AUDIT_KEYS to the audit chain (--generate: make a new key)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--generate", action="store_true",
                            help="print a new key; without PORTAL_AUDIT_KEYS, put it first in var/audit.key and apply it")

    def handle(self, *args, **options) -> None:
        if options["generate"]:
            new = keys.generate()
            if Config.from_env().audit_keys:
                self.stdout.write(new)
                self.stderr.write("put it first in PORTAL_AUDIT_KEYS everywhere, restart, then run rotate_audit_key")
                return
            path = settings.VAR_DIR / keys.KEY_FILE
            existing = [k for k in (path.read_text().strip().split(",") if path.exists() else []) if k]
            descriptor = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(",".join([new, *existing]))
            os.replace(f"{path}.new", path)
            settings.AUDIT_KEYS = [new, *existing]
        if keys.current() is None:
            raise CommandError("no audit key configured: set PORTAL_AUDIT_KEYS (rotate_audit_key --generate makes one)")
        result = audit_key_rotate(actor="system")
        public = [{"key_id": key.id, "rank": rank, "public_key": key.public_key_text}
                  for rank, key in enumerate(keys.keyring())]
        self.stdout.write(json.dumps({**result, "keys": public}))
