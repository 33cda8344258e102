"""manage.py audit_verify: recompute the hash chain; exit status 1 when it is broken."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_verify


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain and name the first broken seq (the check is itself audited)."

    def handle(self, *args, **options) -> None:
        result = audit_verify(actor="system")
        self.stdout.write(json.dumps({
            "ok": result.ok, "events": result.events, "head_hash": result.head_hash,
            "first_broken_seq": result.first_broken_seq, "problem": result.problem,
        }))
        if not result.ok:
            raise CommandError(f"audit chain broken at seq {result.first_broken_seq}: {result.problem}")
