"""Which queued requests one worker applies together, in one target transaction.

The outbox groups its messages by this rule (one message per batch, naming the companions) and
the engine claims companions by it; both sit above this module, so neither imports the other.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from portal.choices import RequestType
from provisioning.plans import module_for

# Request types applied together, in one target transaction, when several wait for the same
# database: transactional catalog changes of a few statements, where a transaction per request
# would cost more in round trips and commits than the plans themselves.
BATCH_TYPES = (RequestType.ROLE, RequestType.SCHEMA, RequestType.GRANT, RequestType.REVOKE)


def batch_max() -> int:
    """The most requests one target transaction applies (PROVISIONING_BATCH_MAX; 1 = alone)."""
    return max(1, int(settings.PROVISIONING_BATCH_MAX))


def database_of(request: Any) -> str:
    """The database a request's plan runs in: the payload's, else the instance's own."""
    return module_for(request.type).database(request.payload) or request.instance.database
