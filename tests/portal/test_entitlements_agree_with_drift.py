"""Entitlements that agree with Drift (#19 item 6): a replica's privileges are explained by its
primary's records; PostgreSQL's built-ins are labelled as such; what lies outside the portal's scope
is labelled, not flagged; what Drift would report stays `unexplained` (the one "needs attention")."""

from __future__ import annotations

import pytest

from portal.models import Grant, Instance, ManagedRole, ManagedSchema, Team
from portal.selectors.entitlements import Entitlement, _join_records


@pytest.fixture
def primary(people):
    return Instance.objects.create(name="ent-primary", environment="dev", host="127.0.0.1", port=1, admin_user="postgres")


@pytest.fixture
def replica(primary):
    return Instance.objects.create(name="ent-replica", environment="dev", host="127.0.0.1", port=2,
                                   admin_user="postgres", replica_of=primary)


@pytest.fixture
def records(primary):
    team = Team.objects.get(name="payments")
    ManagedSchema.objects.create(instance=primary, database="app", name="ledger", owner_role="ledger_owner", team=team)
    ManagedRole.objects.create(instance=primary, name="ledger_owner", login=False, team=team)
    ManagedRole.objects.create(instance=primary, name="reporting", login=False, team=team)
    Grant.objects.create(instance=primary, database="app", schema="ledger", role="reporting",
                         privileges=["USAGE", "SELECT"], tables="all", team=team)
    # a schema the portal does not manage but grants on
    Grant.objects.create(instance=primary, database="app", schema="shared", role="reporting",
                         privileges=["SELECT"], tables="all", team=team)


def rows_of(instance: Instance) -> dict[str, Entitlement]:
    rows = {
        "owner": Entitlement(instance.name, "app", "ledger", "ledger_owner", "owner", ["OWNER"]),
        "granted": Entitlement(instance.name, "app", "ledger", "reporting", "tables", ["SELECT"], "all"),
        "by_hand": Entitlement(instance.name, "app", "ledger", "reporting", "tables", ["DELETE"], "all"),
        "stranger_in_managed_schema": Entitlement(instance.name, "app", "ledger", "intern", "schema", ["USAGE"]),
        "public_schema_owner": Entitlement(instance.name, "app", "public", "pg_database_owner", "owner", ["OWNER"]),
        "public_usage": Entitlement(instance.name, "app", "public", "PUBLIC", "schema", ["USAGE", "CREATE"]),
        "hand_made_next_to_a_grant": Entitlement(instance.name, "app", "shared", "rogue", "tables", ["UPDATE"],
                                                 ["t1"]),
        "unmanaged": Entitlement(instance.name, "legacy", "stuff", "legacy_app", "tables", ["SELECT"], "all"),
        "admin": Entitlement(instance.name, "*", "*", "postgres", "superuser", ["SUPERUSER"]),
        "other_superuser": Entitlement(instance.name, "*", "*", "dba_bob", "superuser", ["SUPERUSER"]),
        "managed_superuser": Entitlement(instance.name, "*", "*", "reporting", "superuser", ["SUPERUSER"]),
    }
    _join_records(instance, list(rows.values()))
    return rows


EXPECTED = {  # name: (source, unexplained)
    "owner": ("owner", False),
    "granted": ("grant", False),
    "by_hand": ("", True),                       # Drift: unexpected privilege of a managed role
    "stranger_in_managed_schema": ("", True),    # Drift: anyone on a managed schema
    "public_schema_owner": ("builtin", False),
    "public_usage": ("builtin", False),
    "hand_made_next_to_a_grant": ("", True),     # Drift: a schema the portal grants on
    "unmanaged": ("outside", False),             # Drift leaves it alone
    "admin": ("admin", False),
    "other_superuser": ("outside", False),
    "managed_superuser": ("", True),              # Drift: a dangerous attribute on a managed role
}


def test_a_primarys_rows_are_flagged_as_drift_would(records, primary):
    rows = rows_of(primary)
    assert {name: (row.source, row.unexplained) for name, row in rows.items()} == EXPECTED


def test_a_replicas_rows_are_explained_by_its_primarys_records(records, replica):
    # given no record of the replica's own (it was never granted anything: it mirrors the primary)
    assert not Grant.objects.filter(instance=replica).exists()
    # then its rows read exactly as the primary's
    rows = rows_of(replica)
    assert {name: (row.source, row.unexplained) for name, row in rows.items()} == EXPECTED



def test_drift_flags_the_same_hand_made_grant_next_to_a_portal_grant(records, primary):
    from provisioning import catalog
    from provisioning.drift import compute_findings

    def privilege(schema: str, grantee: str, name: str, obj: str | None = "t1") -> catalog.Privilege:
        return catalog.Privilege("app", "table" if obj else "schema", schema, obj, grantee, "owner_x", "owner_x",
                                 name, False)

    observed = [privilege("shared", "rogue", "UPDATE"), privilege("legacy_schema", "legacy_app", "SELECT")]
    found = compute_findings(primary, {}, observed)
    flagged = {(key.role, key.privilege) for key in found}
    # the hand-made grant on a schema the portal grants on is drift; the unmanaged one is not
    assert ("rogue", "UPDATE") in flagged and ("legacy_app", "SELECT") not in flagged
