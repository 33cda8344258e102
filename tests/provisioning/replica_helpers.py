"""What the replica tests share: requests for a replica, applying one, connecting to one, waiting for it.

The fixtures (a fresh primary per module, the `build` of a replica) are in tests/provisioning/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal

import psycopg

from portal.choices import RequestStatus, RequestType
from portal.models import ChangeRequest, Instance, Team
from portal.selectors.plan_context import plan_context_for
from provisioning import engine
from provisioning.plans import module_for, plan_hash, plan_text
from provisioning.replicas.local import processes_using, replicas_root
from tests.fixtures.celery import wait_until

POLL_SECONDS = 15  # upper bound for "visible on the replica within seconds"


def remove_all_replicas() -> None:
    root = replicas_root()
    for pid in processes_using(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def replica_request(primary: Instance, name: str, requester) -> ChangeRequest:
    module = module_for(RequestType.REPLICA)
    payload = module.validate({"name": name}, plan_context_for(primary, None, requester, request_type="replica"))
    plan = plan_text(module.render(payload))
    return ChangeRequest.objects.create(
        type=RequestType.REPLICA, instance=primary, team=Team.objects.get(name="payments"), requester=requester,
        justification="read traffic for reports", payload=payload, plan=plan, plan_hash=plan_hash(plan),
        status=RequestStatus.QUEUED,
    )


def apply_now(request: ChangeRequest, worker: str = "test") -> str:
    """What the apply task does: the executor claims the request and hands it to the replica runner."""
    return engine.apply(request_id=request.pk, plan_hash=request.plan_hash, worker=worker)


def admin_conn_to(instance: Instance, dbname: str = "postgres", **kw) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=instance.port, user=instance.admin_user,
                           password=instance.admin_password, dbname=dbname, autocommit=True, **kw)


def poll(fn, what: str):
    """wait_until with the replica tests' bound ("visible on the replica within seconds")."""
    return wait_until(fn, timeout=POLL_SECONDS, interval=0.05, message=what)
