from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here: audit.siem imports the models, which exist only once the apps are loaded.
        from audit.siem import register_metrics

        # The SIEM gauges (lag, failing, paused) are read from the cursor rows at scrape time, so
        # every web process reports the same figures.
        register_metrics()
