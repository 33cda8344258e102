"""A small audited world for the audit tests: alice's role and grant, approved by bob.

Built with the models and audit.services.record() directly, so these tests do not depend on
the request services' internals; events carry the request ids the tests filter on (the
audit tables outlive transactional tests, so no test may assume an empty log).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.utils import timezone

from audit.services import record
from portal.choices import Decision, Environment, InstanceKind, RequestStatus, RequestType, Risk
from portal.models import Approval, ChangeRequest, Grant, Instance, ManagedRole, Team

SECRET = "Sup3r-Secret-Passw0rd-xyzzy"


@dataclass
class World:
    instance: Instance
    role_request: ChangeRequest
    grant_request: ChangeRequest
    grant: Grant
    request_ids: list[int]


def _request(people, instance, team, type_, payload, plan, risk=Risk.LOW) -> ChangeRequest:
    plan_hash = hashlib.sha256("\n".join(plan).encode()).hexdigest()
    now = timezone.now()
    return ChangeRequest.objects.create(
        type=type_, instance=instance, team=team, requester=people["alice"], justification="audit test",
        payload=payload, plan=plan, plan_hash=plan_hash, risk=risk, status=RequestStatus.APPLIED,
        approved_at=now, applied_at=now, submitted_ip="10.1.2.3",
    )


def _lifecycle(request: ChangeRequest, people, instance) -> None:
    record("request.submitted", actor=people["alice"], actor_ip="10.1.2.3", object_type="request",
           object_id=request.pk, instance=instance, request_id=request.pk, outcome="submitted",
           details={"type": request.type, "plan_hash": request.plan_hash})
    Approval.objects.create(request=request, reviewer=people["bob"], decision=Decision.APPROVE, comment="ok",
                            plan_hash=request.plan_hash)
    record("request.approved", actor=people["bob"], actor_ip="10.1.2.4", object_type="request",
           object_id=request.pk, instance=instance, request_id=request.pk, approvers=["bob"], outcome="approved",
           details={"plan_hash": request.plan_hash})
    for statement in request.plan:
        record("sql.executed", actor="system", object_type="request", object_id=request.pk, instance=instance,
               database="app", statement=statement, request_id=request.pk, approvers=["bob"], outcome="ok")
    record("request.applied", actor="system", object_type="request", object_id=request.pk, instance=instance,
           request_id=request.pk, approvers=["bob"], outcome="applied", details={"worker": "w1"})


def build_world(people, instance: Instance | None = None, *, role: str = "payments_svc", schema: str = "public") -> World:
    if instance is None:
        instance = Instance.objects.create(name="auditdemo", environment=Environment.DEV, kind=InstanceKind.EXTERNAL,
                                           host="127.0.0.1", port=1, admin_user="postgres")
    team = Team.objects.get(name="payments")
    role_request = _request(people, instance, team, RequestType.ROLE, {"name": role, "login": True, "member_of": []},
                            [f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'"])
    _lifecycle(role_request, people, instance)
    ManagedRole.objects.create(instance=instance, name=role, login=True, team=team, request=role_request)
    payload = {"role": role, "database": "app", "schema": schema, "privileges": ["USAGE", "SELECT"],
               "tables": "all", "default_privileges": False}
    grant_request = _request(people, instance, team, RequestType.GRANT, payload,
                             [f"GRANT USAGE ON SCHEMA {schema} TO {role}",
                              f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"], risk=Risk.MEDIUM)
    _lifecycle(grant_request, people, instance)
    grant = Grant.objects.create(instance=instance, database="app", schema=schema, role=role,
                                 privileges=["USAGE", "SELECT"], tables="all", team=team, request=grant_request)
    record("secret.revealed", actor=people["alice"], object_type="request", object_id=role_request.pk,
           request_id=role_request.pk, details={"role": role, "password": SECRET})
    return World(instance, role_request, grant_request, grant, [role_request.pk, grant_request.pk])
