"""Beat job: each replica's state and lag (bytes from the primary, seconds from the standby)."""

from celery import shared_task


@shared_task(name="provisioning.refresh_replicas", ignore_result=True)
def refresh_replicas() -> int:
    from portal.services.replicas import replicas_refresh

    return replicas_refresh()
