from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "dbportal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Deleting a system-level object is audited whichever way it happens (PCI DSS 10.2.1.7).
        from portal.services import system_objects

        system_objects.connect()
