"""manage.py portal_backup: dump the portal's own database into the backup root (docs/operations.md)."""

from django.core.management.base import BaseCommand, CommandError

from portal.services.portal_backups import portal_backup
from provisioning.backups.tools import BackupError


class Command(BaseCommand):
    help = "Back up the portal database (pg_dump -Fc, globals, SHA-256 manifest) under PORTAL_BACKUP_ROOT/portal/."

    def handle(self, *args, **options):
        try:
            result = portal_backup()
        except BackupError as exc:
            raise CommandError(f"backup failed: {exc}") from None
        self.stdout.write(f"backup {result['key']}: {result['size_bytes']} bytes, {result['tables']} tables, "
                          f"manifest sha256 {result['checksum']}\n{result['folder']}")
