"""manage.py audit_verify: check the keyed chain and the checkpoints; exit status 1 when it is broken."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_verify


class Command(BaseCommand):
    help = ("Recompute the audit log's keyed hash chain, check it against the signed checkpoints, and name "
            "the first broken seq (the check is itself audited).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--incremental", action="store_true",
                            help="start after the newest checkpoint that still matches (cost: the events since)")

    def handle(self, *args, **options) -> None:
        result = audit_verify(actor="system", incremental=options["incremental"])
        self.stdout.write(json.dumps({
            "ok": result.ok, "events": result.events, "head_hash": result.head_hash,
            "first_broken_seq": result.first_broken_seq, "problem": result.problem,
            "start_seq": result.start_seq, "checkpoints": result.checkpoints,
            "checkpoint_problems": result.checkpoint_problems, "pending": result.pending,
        }))
        if not result.ok:
            where = f"at seq {result.first_broken_seq}" if result.first_broken_seq is not None else "(checkpoints)"
            raise CommandError(f"audit chain broken {where}: {result.problem}")
