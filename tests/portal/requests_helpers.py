"""Helpers for request tests: unique names, bodies, and real applies of prerequisite plans."""

from __future__ import annotations

import secrets

from portal.models import ChangeRequest
from portal.services.names import names_release
from provisioning.connections import connect
from provisioning.inventory import inventory_refresh
from provisioning.managed import managed_record_applied
from provisioning.plans import module_for


def unique(prefix: str) -> str:
    # The managed cluster lives for the whole session: names must not collide between tests.
    return f"{prefix}_{secrets.token_hex(4)}"


def schema_body(name: str | None = None, **overrides) -> dict:
    body = {"type": "schema", "instance": "demo", "team": "payments", "justification": "payments service data",
            "payload": {"database": "app", "name": name or unique("sch")}}
    body.update(overrides)
    return body


def apply_for_test(request: ChangeRequest) -> None:
    """Set up prerequisites (a schema, a role) on the real cluster the way an apply would, and
    record them; the full worker path is tested in the provisioning suite and tests/e2e_api."""
    module = module_for(request.type)
    with connect(request.instance, module.database(request.payload)) as conn, conn.transaction():
        for step in module.render(request.payload, secrets={"password": "SCRAM-SHA-256$4096:x$y:z"}):
            conn.execute(step.statement)
    managed_record_applied(request)
    ChangeRequest.objects.filter(pk=request.pk).update(status="applied")
    names_release([request])  # as the executor does when it records "applied"
    inventory_refresh(request.instance)
