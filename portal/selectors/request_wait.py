"""Long-polling a request (`GET /api/v1/requests/{id}/?wait=N&status=S`): the answer is held until
the request's status is no longer S, or N seconds have passed, so a client following a request
(`dbportal wait`, a CI job) asks once per change instead of every few hundred milliseconds.

The wait re-reads one column of one row every POLL_SECONDS (a primary-key lookup, no lock, no
transaction held open), bounded by MAX_WAIT_SECONDS so a sync web worker is never held for long;
a client loops on it. Visibility is checked first by the caller (404 outside the caller's scope).
"""

from __future__ import annotations

import time

from django.db import connection

from portal.errors import InvalidPayload
from portal.models import ChangeRequest

MAX_WAIT_SECONDS = 30
POLL_SECONDS = 0.25


def parse_wait(value: str | None) -> int:
    """`wait` as whole seconds, 0 when absent; 400 naming the field otherwise."""
    if value in (None, ""):
        return 0
    text = str(value)
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= MAX_WAIT_SECONDS:
        raise InvalidPayload.field("wait", f"whole seconds from 0 to {MAX_WAIT_SECONDS}")
    return int(text)


def wait_for_change(pk: int, seen_status: str, seconds: int) -> str:
    """Block until request `pk`'s status differs from `seen_status` (or time is up); its status."""
    deadline = time.monotonic() + seconds
    status = seen_status
    while True:
        status = ChangeRequest.objects.filter(pk=pk).values_list("status", flat=True).first() or status
        if status != seen_status or time.monotonic() >= deadline:
            return status
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
