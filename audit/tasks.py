"""Audit tasks run by beat: forwarding the log to the SIEM collectors (audit/siem.py), retention (audit/archive.py)."""

from celery import shared_task

from audit.archive import run
from audit.chainer import chain_pending
from audit.services import SYSTEM, audit_checkpoint
from audit.siem import forward_all


@shared_task(name="audit.siem_forward", ignore_result=True, acks_late=True)
def siem_forward() -> dict[str, int]:
    """Send what each configured collector has not acknowledged yet, batch by batch (a run is
    bounded; the next beat tick continues). Safe to run twice at once: a cursor row locked by one
    run is skipped by the other."""
    return forward_all()


@shared_task(name="audit.archive_run", ignore_result=True, acks_late=True)
def archive_run() -> dict[str, object]:
    """Retention (audit/archive.py), as the system: archive every whole month past the online window,
    detach each verified archive, delete archives whose retention has ended. Daily, so a missed
    first-of-month tick costs a day, not a month; a run that finds nothing due does two queries, and
    an advisory lock keeps two runs from overlapping."""
    return run(actor=SYSTEM).as_dict()


@shared_task(name="audit.chain", ignore_result=True)
def chain() -> int:
    """Chain what writers' own after-commit chainers left (audit/chainer.py); every second. From the
    first pending placeholder, not the pending bound: should an event ever be pending below the bound,
    it waits a second at most (and is logged as audit.pending_below_bound)."""
    return chain_pending(wait=False, bounded=False)


@shared_task(name="audit.checkpoint", ignore_result=True)
def checkpoint() -> int | None:
    """Write a signed checkpoint when one is due (PORTAL_AUDIT_CHECKPOINT_EVENTS / _MINUTES)."""
    written = audit_checkpoint()
    return written.number if written else None
