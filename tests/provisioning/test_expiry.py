"""Grant expiry: a system revoke with its own plan and trail, and the role's live sessions end."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import RequestStatus
from portal.models import ChangeRequest, Grant
from provisioning.expiry import expire_grants
from provisioning.secrets import secret_reveal
from tests.provisioning.helpers import admin_conn, approved_request, grant_payload, role_payload, schema_payload, unique

pytestmark = pytest.mark.slow



def test_an_expired_grant_is_revoked_by_a_system_request_and_the_roles_sessions_end(
    transactional_db, people, managed_cluster, managed_instance, celery_worker, wait_for_status
):
    # given a login role with SELECT on a schema's tables, granted until some time
    schema, name = unique("exp"), unique("temp")
    applied = [approved_request(managed_instance, "schema", schema_payload(schema), requester=people["alice"]),
               approved_request(managed_instance, "role", role_payload(name, login=True), requester=people["alice"])]
    for request in applied:
        assert wait_for_status(request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t (id int)").format(sql.Identifier(schema)))
    expires = (timezone.now() + timedelta(days=1)).isoformat()
    grant_request = approved_request(managed_instance, "grant",
                                     grant_payload(name, schema, ["SELECT"], expires_at=expires),
                                     requester=people["alice"])
    assert wait_for_status(grant_request.pk, {"applied", "failed"}).status == RequestStatus.APPLIED
    grant = Grant.objects.get(request=grant_request)
    assert grant.expires_at is not None
    password = secret_reveal(request=ChangeRequest.objects.get(pk=applied[1].pk), user=people["alice"])
    # and the role connected, reading the table
    session = psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name,
                              password=password, passfile="/dev/null", autocommit=True)
    assert session.execute(sql.SQL("SELECT count(*) FROM {}.t").format(sql.Identifier(schema))).fetchone()[0] == 0
    # when the grant's time is up and the beat job runs
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    filed = expire_grants()
    assert len(filed) == 1
    assert expire_grants() == []  # once
    revoke = wait_for_status(filed[0], {"applied", "failed"})
    # then a system revoke request took the privileges back
    assert revoke.status == RequestStatus.APPLIED, revoke.status_detail
    assert revoke.requester_id is None and revoke.type == "revoke"
    assert any(statement.startswith("REVOKE SELECT ON ALL TABLES") for statement in revoke.plan)
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoked_by_id == revoke.pk
    actions = set(AuditEvent.objects.filter(request_id=revoke.pk).values_list("action", flat=True))
    assert {"grant.expired", "request.queued", "sql.executed", "request.applied", "session.terminated"} <= actions
    # and the open session was ended
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    # and a new session cannot read any more
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name,
                         password=password, passfile="/dev/null", autocommit=True) as again:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            again.execute(sql.SQL("SELECT count(*) FROM {}.t").format(sql.Identifier(schema)))
    terminated = AuditEvent.objects.get(request_id=revoke.pk, action="session.terminated")
    assert terminated.details["role"] == name and terminated.details["terminated"] is True
