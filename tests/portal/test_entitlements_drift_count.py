"""Entitlements and Drift agree on a real cluster (#19 item 6): after a drift scan, the rows flagged
on the entitlements page are exactly the (role, schema) pairs of Drift's open findings, built-ins are
labelled, a replica (same catalog) is explained by its primary's records, and both pages show the
same "needs attention" count."""

from __future__ import annotations

import pytest
from django.urls import reverse
from psycopg import sql

from portal.models import Grant, Instance, ManagedRole, ManagedSchema, Team
from portal.selectors.entitlements import entitlements_for
from provisioning.connections import connect
from provisioning.drift import drift_scan
from provisioning.models import DriftFinding
from tests.portal.requests_helpers import unique

pytestmark = pytest.mark.django_db


@pytest.fixture
def drifted(people, managed_instance):
    """A schema the portal made (owner O), a role R granted SELECT on all its tables through the portal,
    and two hand-made grants: INSERT on t1 to R, USAGE on the schema to an unmanaged role I."""
    names = {key: unique(key) for key in ("ent", "own", "rep", "intr")}
    ident = {key: sql.Identifier(value) for key, value in names.items()}
    with connect(managed_instance, "app", autocommit=True) as conn:
        for role in ("own", "rep", "intr"):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident[role]))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident["ent"], ident["own"]))
        conn.execute(sql.SQL("CREATE TABLE {}.t1 (id int)").format(ident["ent"]))
        conn.execute(sql.SQL("ALTER TABLE {}.t1 OWNER TO {}").format(ident["ent"], ident["own"]))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident["ent"], ident["rep"]))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident["ent"], ident["rep"]))
        # by hand, outside the portal
        conn.execute(sql.SQL("GRANT INSERT ON {}.t1 TO {}").format(ident["ent"], ident["rep"]))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident["ent"], ident["intr"]))
    team = Team.objects.get(name="payments")
    ManagedSchema.objects.create(instance=managed_instance, database="app", name=names["ent"],
                                 owner_role=names["own"], team=team)
    ManagedRole.objects.create(instance=managed_instance, name=names["own"], login=False, team=team)
    ManagedRole.objects.create(instance=managed_instance, name=names["rep"], login=False, team=team)
    Grant.objects.create(instance=managed_instance, database="app", schema=names["ent"], role=names["rep"],
                         privileges=["SELECT"], tables="all", team=team)
    drift_scan(managed_instance)
    return names


def test_flagged_rows_are_exactly_drifts_findings_and_builtins_are_labelled(drifted, managed_instance):
    rows = entitlements_for(instances=[managed_instance]).rows
    flagged = {(r.role, r.schema) for r in rows if r.unexplained}
    findings = DriftFinding.objects.filter(instance=managed_instance, status="open")
    found = {(f.role, f.object_name.split(".")[0].split(" ")[0]) for f in findings}
    assert flagged == found == {(drifted["rep"], drifted["ent"]), (drifted["intr"], drifted["ent"])}
    # the portal's own grant and the schema's owner are explained
    explained = {(r.role, r.kind): r.source for r in rows if r.schema == drifted["ent"] and not r.unexplained}
    assert explained[(drifted["own"], "owner")] == "owner" and explained[(drifted["rep"], "schema")] == "grant"
    # PostgreSQL's built-ins on the public schema are labelled, never flagged
    builtins = [r for r in rows if r.role in ("PUBLIC", "pg_database_owner")]
    assert builtins and all(r.source == "builtin" and not r.unexplained for r in builtins)


def test_a_replica_is_explained_by_its_primarys_records(drifted, managed_instance):
    # given a replica of the instance (its catalog is the primary's: here, the same cluster)
    replica = Instance(name="demo-replica", environment="dev", kind="local", host="127.0.0.1",
                       port=managed_instance.port, database="postgres", admin_user="postgres",
                       replica_of=managed_instance, status="reachable")
    replica.admin_password = managed_instance.admin_password
    replica.save()
    # then its rows read exactly as the primary's, with no record of its own
    def verdicts(instance):
        return sorted((r.database, r.schema, r.role, r.kind, tuple(r.privileges), r.source, r.unexplained)
                      for r in entitlements_for(instances=[instance]).rows)
    assert verdicts(replica) == verdicts(managed_instance)


def test_both_pages_show_drifts_open_findings_as_the_one_count(drifted, managed_instance, web_for):
    count = DriftFinding.objects.filter(status="open").count()
    assert count >= 2
    carol = web_for("carol")
    entitlements = carol.get(reverse("entitlements"), {"instance": "demo"}).content.decode()
    drift = web_for("bob").get(reverse("drift-list")).content.decode()
    label = f'id="needs-attention">{count} need{"s" if count == 1 else ""} attention'
    assert label in entitlements and label in drift
