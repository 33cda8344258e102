"""Load the group-map file (PORTAL_OIDC_GROUP_MAP, or --file) into an empty mapping table, or check it.

`--check` validates the file only (exit status 1 with the first bad entry named); without it the
entries are created, audited as `identity.mapping_created` by the portal, unless the table has rows
already (the admins' edits win: the file only bootstraps).
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.errors import InvalidPayload
from portal.services.identity import mapping_bootstrap, mapping_file_entries


class Command(BaseCommand):
    help = "Load PORTAL_OIDC_GROUP_MAP into an empty group-mapping table (or --check it)."

    def add_arguments(self, parser):
        parser.add_argument("--file", type=Path, default=None, help="instead of PORTAL_OIDC_GROUP_MAP")
        parser.add_argument("--check", action="store_true", help="validate only, change nothing")

    def handle(self, *args, file=None, check=False, **options):
        path = file or settings.OIDC_GROUP_MAP
        if not path:
            raise CommandError("no file: set PORTAL_OIDC_GROUP_MAP or pass --file")
        try:
            if check:
                entries = mapping_file_entries(path)
                self.stdout.write(f"{path}: {len(entries)} mapping(s), all valid")
                return
            created = mapping_bootstrap(path)
        except InvalidPayload as exc:
            raise CommandError(exc.detail) from None
        if created:
            self.stdout.write(f"{created} mapping(s) loaded from {path}")
        else:
            self.stdout.write("the mapping table has rows already: nothing loaded (edit them on the Sign-in groups page)")
