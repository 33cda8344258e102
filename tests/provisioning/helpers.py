"""Building approved requests for provisioning tests without going through the web layer."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from django.db import transaction

from portal.choices import RequestStatus
from portal.models import ChangeRequest, Team
from provisioning.outbox import enqueue_apply
from provisioning.plans import module_for, plan_hash, plan_text


def approved_request(instance, type_: str, payload: dict, *, requester=None, team: str = "payments",
                     enqueue: bool = True) -> ChangeRequest:
    """A request whose plan is rendered from `payload` exactly as submit does, approved and
    (by default) queued through the outbox in one committed transaction."""
    team_row, _ = Team.objects.get_or_create(name=team)
    plan = plan_text(module_for(type_).render(payload, secrets=None))
    with transaction.atomic():
        request = ChangeRequest.objects.create(
            type=type_, instance=instance, team=team_row, requester=requester, justification="test",
            payload=payload, plan=plan, plan_hash=plan_hash(plan), status=RequestStatus.APPROVED,
        )
        if enqueue:
            enqueue_apply(request)
    return request


def admin_conn(cluster, dbname: str = "app", **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(cluster.socket_conninfo(dbname), autocommit=True, **kwargs)


def markers(cluster, request_id: int, dbname: str = "app") -> int:
    with admin_conn(cluster, dbname) as conn:
        if conn.execute("SELECT to_regclass('dbportal_meta.applied_change')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM dbportal_meta.applied_change WHERE request_id = %s",
                            (request_id,)).fetchone()[0]


def schema_payload(name: str, owner: str | None = None) -> dict:
    return {"database": "app", "name": name, "owner_role": owner or f"{name}_owner"}


def grant_payload(role: str, schema: str, privileges: list[str], **extra: Any) -> dict:
    payload = {"role": role, "database": "app", "schema": schema, "privileges": privileges, "tables": "all",
               "default_privileges": False, "expires_at": None, "schema_owner": f"{schema}_owner"}
    payload.update(extra)
    return payload


def role_payload(name: str, *, login: bool = False) -> dict:
    return {"name": name, "login": login, "member_of": [], "connection_limit": None, "valid_until": None}


def unique(prefix: str) -> str:
    """A name no other test (or earlier run on the same cluster) has used."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
