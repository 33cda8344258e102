"""Portal housekeeping tasks run by beat."""

from celery import shared_task

from portal.models import Instance


@shared_task(name="portal.refresh_instance_status", ignore_result=True)
def refresh_instance_status() -> int:
    """Refresh reachable / unreachable and the version of every instance."""
    from portal.services.instances import instance_refresh_status

    count = 0
    for instance in Instance.objects.exclude(status="retired"):
        instance_refresh_status(instance)
        count += 1
    return count
