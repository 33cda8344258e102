"""Audit tasks run by beat: forwarding the log to the SIEM collectors (audit/siem.py)."""

from celery import shared_task

from audit.siem import forward_all


@shared_task(name="audit.siem_forward", ignore_result=True, acks_late=True)
def siem_forward() -> dict[str, int]:
    """Send what each configured collector has not acknowledged yet, batch by batch (a run is
    bounded; the next beat tick continues). Safe to run twice at once: a cursor row locked by one
    run is skipped by the other."""
    return forward_all()
