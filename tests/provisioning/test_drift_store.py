"""Drift findings are stored set-based (#23): a scan costs the same few statements whatever the
number of findings it sees again, and findings keep their ids, status, audit trail and last-seen
time as when each was saved on its own."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from portal.choices import DriftKind, DriftStatus
from portal.models import Grant, ManagedRole, Team
from provisioning.drift import drift_scan
from provisioning.models import DriftFinding
from tests.provisioning.helpers import admin_conn, unique

pytestmark = pytest.mark.slow


def _ghost_grants(instance, count: int) -> list[Grant]:
    """Portal grants to roles the cluster does not have: one missing-privilege finding each."""
    team = Team.objects.get(name="payments")
    return [Grant.objects.create(instance=instance, database="app", schema="public", role=unique("ghost"),
                                 privileges=["SELECT"], tables="all", team=team) for _ in range(count)]


def _findings(instance) -> dict[str, DriftFinding]:
    return {f.role: f for f in DriftFinding.objects.filter(instance=instance, role__startswith="ghost")}


def _events(action: str, instance) -> list[int]:
    """The ghost findings' ids in the drift events recorded with `action` (the cluster's own
    state may hold other drift: PUBLIC's privileges on the public schema the ghosts are granted on)."""
    ghosts = {str(pk) for pk in DriftFinding.objects.filter(instance=instance, role__startswith="ghost").values_list(
        "pk", flat=True)}
    return sorted(int(i) for i in AuditEvent.objects.filter(action=action, object_type="drift").values_list(
        "object_id", flat=True) if i in ghosts)


def _scan_statements(instance) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        drift_scan(instance)
    return [q["sql"] for q in queries.captured_queries]


def test_findings_seen_again_cost_the_same_statements_whatever_their_number(people, managed_instance):
    # given 3 findings, scanned once (3 new, 3 audited)
    first = _ghost_grants(managed_instance, 3)
    drift_scan(managed_instance)
    found = _findings(managed_instance)
    assert {g.role for g in first} == set(found)
    assert all(f.kind == DriftKind.MISSING and f.status == DriftStatus.OPEN for f in found.values())
    assert _events("drift.detected", managed_instance) == sorted(f.pk for f in found.values())
    # when they are seen again
    before = timezone.now()
    with_three = _scan_statements(managed_instance)
    again = _findings(managed_instance)
    # then nothing new: same rows, same status and detail, last seen moved, no audit event
    assert {r: (f.pk, f.status, f.detail) for r, f in again.items()} == {
        r: (f.pk, f.status, f.detail) for r, f in found.items()}
    assert all(f.last_seen_at >= before for f in again.values())
    assert len(_events("drift.detected", managed_instance)) == 3 and _events("drift.resolved", managed_instance) == []

    # and with five times as many findings seen again, a scan runs the same statements
    _ghost_grants(managed_instance, 12)
    assert drift_scan(managed_instance)["new"] == 12  # only the new ghosts: the rest were seen before
    with_fifteen = _scan_statements(managed_instance)
    assert len(with_fifteen) == len(with_three), "\n".join(with_fifteen)
    assert len(_findings(managed_instance)) == 15 and len(_events("drift.detected", managed_instance)) == 15


def test_resolved_findings_are_resolved_and_audited_each(people, managed_instance):
    grants = _ghost_grants(managed_instance, 6)
    drift_scan(managed_instance)
    found = _findings(managed_instance)
    # when four of the grants are revoked in the portal, the cluster no longer owes them
    gone = grants[:4]
    Grant.objects.filter(pk__in=[g.pk for g in gone]).update(revoked_at=timezone.now())
    result = drift_scan(managed_instance)
    # then exactly those four findings are resolved, each with its event; the others stay open
    assert result["resolved"] == 4 and result["new"] == 0
    after = _findings(managed_instance)
    resolved = {r for r, f in after.items() if f.status == DriftStatus.RESOLVED}
    assert resolved == {g.role for g in gone}
    assert all(after[r].resolved_at is not None for r in resolved)
    assert {r for r, f in after.items() if f.status == DriftStatus.OPEN} == {g.role for g in grants[4:]}
    assert _events("drift.resolved", managed_instance) == sorted(found[g.role].pk for g in gone)
    # and a later scan resolves nothing more and audits nothing more
    assert drift_scan(managed_instance)["resolved"] == 0
    assert len(_events("drift.resolved", managed_instance)) == 4


def test_an_acknowledged_finding_stays_acknowledged_and_a_stale_detail_is_rewritten(people, managed_instance):
    grants = _ghost_grants(managed_instance, 2)
    drift_scan(managed_instance)
    found = _findings(managed_instance)
    acknowledged, stale = found[grants[0].role], found[grants[1].role]
    DriftFinding.objects.filter(pk=acknowledged.pk).update(status=DriftStatus.ACKNOWLEDGED)
    DriftFinding.objects.filter(pk=stale.pk).update(detail="an older wording")
    drift_scan(managed_instance)
    after = _findings(managed_instance)
    assert after[acknowledged.role].status == DriftStatus.ACKNOWLEDGED
    assert (after[stale.role].pk, after[stale.role].status, after[stale.role].detail) == (
        stale.pk, DriftStatus.OPEN, stale.detail)
    assert len(_events("drift.detected", managed_instance)) == 2 and _events("drift.resolved", managed_instance) == []


def test_a_hand_grant_names_its_grantor(people, managed_cluster, managed_instance):
    # given a role the portal manages, and a table it was never granted anything on
    role, schema = unique("handed"), unique("plain")
    with admin_conn(managed_cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int); GRANT USAGE ON SCHEMA {s} TO {r};"
                             " GRANT SELECT ON {s}.t TO {r}").format(s=sql.Identifier(schema), r=sql.Identifier(role)))
    try:
        ManagedRole.objects.create(instance=managed_instance, name=role, team=Team.objects.get(name="payments"))
        drift_scan(managed_instance)
        found = {(f.kind, f.object_type, f.object_name, f.privilege): f.detail
                 for f in DriftFinding.objects.filter(instance=managed_instance, role=role)}
        assert found == {
            (DriftKind.UNEXPECTED, "schema", schema, "USAGE"):
                f"{role} holds USAGE on schema {schema} (granted by postgres); no active portal grant gives it",
            (DriftKind.UNEXPECTED, "table", f"{schema}.t", "SELECT"):
                f"{role} holds SELECT on table {schema}.t (granted by postgres); no active portal grant gives it",
        }
    finally:
        with admin_conn(managed_cluster) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
