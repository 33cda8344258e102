"""manage.py portal_restore_drill [--backup portal/<stamp>]: restore the newest portal dump into a scratch
cluster, check it (sums, every table, exact row counts, the audit chain) and remove it (docs/operations.md)."""

from django.core.management.base import BaseCommand, CommandError

from portal.services.portal_backups import portal_restore_drill
from provisioning.backups.tools import BackupError


class Command(BaseCommand):
    help = "Restore drill of the portal database: exit status 1 when any check fails."

    def add_arguments(self, parser):
        parser.add_argument("--backup", help="the key below PORTAL_BACKUP_ROOT (portal/<stamp>); default: newest")

    def handle(self, *args, **options):
        try:
            summary = portal_restore_drill(options.get("backup"))
        except (BackupError, ValueError, OSError) as exc:
            raise CommandError(f"drill failed: {exc}") from None
        for check in summary["checks"]:
            mark = "ok " if check["ok"] else "FAIL"
            self.stdout.write(f"{mark} {check['name']}: {check['detail'].splitlines()[0] if check['detail'] else ''}")
        rto = summary["rto_seconds"]
        self.stdout.write(f"RTO {rto:.2f} s" if rto is not None else "RTO: not reached")
        if not summary["passed"]:
            raise CommandError(f"drill of {summary['key']} FAILED {summary['error']}".strip())
        self.stdout.write(f"drill of {summary['key']} passed")
