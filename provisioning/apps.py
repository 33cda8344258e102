from django.apps import AppConfig


class ProvisioningConfig(AppConfig):
    name = "provisioning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the built-in "local" replica driver with provisioning.replicas.base. Here, not
        # at the top of base.py (local imports base: a cycle) nor of this module (local reads the
        # portal's models and settings, which the app registry must have loaded first).
        from provisioning.replicas import local  # noqa: F401
