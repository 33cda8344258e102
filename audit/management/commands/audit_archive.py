"""manage.py audit_archive list | run | verify | delete PERIOD: retention of the audit log (audit/archive.py).

Who: an operator with shell access to the portal. `run` and `delete` act as the system, or as a
platform admin named with --actor (refused for anyone else); `list` and `verify` only read (verify
records audit.verified). Deleting before an archive's retention has ended is refused and recorded.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit.archive import ArchiveError, archive_delete, run
from audit.archive_reads import archive_list
from audit.archive_verify import verify_all_record
from audit.services import SYSTEM
from portal.errors import DomainError


class Command(BaseCommand):
    help = ("Monthly archives of the audit log: list them, run archiving (archive, verify, detach, delete after "
            "retention), verify archives and the online log together, or delete one archive after its retention.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["list", "run", "verify", "delete"])
        parser.add_argument("period", nargs="?", help="YYYY-MM (delete only)")
        parser.add_argument("--actor", help="a platform admin's username (run and delete; default: the system)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            for archive in archive_list():
                self.stdout.write(json.dumps({
                    "period": archive.period, "status": archive.status, "first_seq": archive.first_seq,
                    "last_seq": archive.last_seq, "count": archive.count, "sha256": archive.sha256,
                    "retain_until": archive.retain_until.isoformat()}))
            return
        if action == "verify":
            result = verify_all_record(actor=SYSTEM)
            self.stdout.write(json.dumps(result.as_dict(), default=str))
            if not result.ok:
                raise CommandError(f"audit log broken at seq {result.first_broken_seq}: {result.problem}")
            return
        actor = self._actor(options.get("actor"))
        try:
            if action == "run":
                self.stdout.write(json.dumps(run(actor=actor).as_dict()))
            else:
                if not options.get("period"):
                    raise CommandError("delete needs the period (YYYY-MM)")
                archive = archive_delete(period=options["period"], actor=actor)
                self.stdout.write(json.dumps({"deleted": archive.period, "sha256": archive.sha256}))
        except (ArchiveError, DomainError) as exc:
            raise CommandError(str(exc)) from None

    def _actor(self, username: str | None) -> Any:
        if not username:
            return SYSTEM
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"--actor: no user {username!r}")
        return user
