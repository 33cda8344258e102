from django.core.management.base import BaseCommand
from django.db import transaction

from audit.services import record
from portal.crypto import rotate
from portal.models import IdentityLink, Instance
from provisioning.models import ExecutorLogin, ReplicationCredential, RequestSecret


class Command(BaseCommand):
    help = "Re-encrypt every stored credential with the first key of PORTAL_FERNET_KEYS."

    def handle(self, *args, **options):
        count = 0
        with transaction.atomic():
            for instance in Instance.objects.select_for_update().exclude(admin_password_encrypted=""):
                instance.admin_password_encrypted = rotate(instance.admin_password_encrypted)
                instance.save(update_fields=["admin_password_encrypted"])
                count += 1
            # The portal's own logins on managed clusters (executor logins, the replication role).
            for model in (ExecutorLogin, ReplicationCredential):
                for credential in model.objects.select_for_update():
                    credential.password_encrypted = rotate(credential.password_encrypted)
                    credential.save(update_fields=["password_encrypted"])
                    count += 1
            for secret in RequestSecret.objects.select_for_update().exclude(encrypted=""):
                secret.encrypted = rotate(secret.encrypted)
                secret.save(update_fields=["encrypted"])
                count += 1
            # Refresh tokens of single sign-on's periodic check (docs/identity.md).
            for link in IdentityLink.objects.select_for_update().exclude(refresh_token_encrypted=""):
                link.refresh_token_encrypted = rotate(link.refresh_token_encrypted)
                link.save(update_fields=["refresh_token_encrypted"])
                count += 1
            record("keys.rotated", actor="system", object_type="fernet", outcome="ok", details={"tokens": count})
        self.stdout.write(f"re-encrypted {count} credentials with the newest key")
