"""Fixtures for the replica tests: one fresh small primary per module (not the shared managed_cluster),
because replicas change its pg_hba.conf and roles, and a promote or a kill must not disturb other modules."""

from __future__ import annotations

import pytest

from portal.choices import Environment, RequestStatus
from portal.models import Instance
from tests.fixtures.clusters import fresh_cluster, instance_for
from tests.provisioning.replica_helpers import apply_now, remove_all_replicas, replica_request


@pytest.fixture(scope="module")
def primary_cluster():
    cluster = fresh_cluster("replicas-primary", "sales")
    yield cluster
    remove_all_replicas()
    cluster.remove()


@pytest.fixture
def primary(db, primary_cluster):
    """The module's cluster registered as local instance `sales_primary` (environment staging)."""
    if not primary_cluster.is_running():
        primary_cluster.start()
    instance = instance_for(primary_cluster, "sales_primary", Environment.STAGING)
    yield instance
    remove_all_replicas()


@pytest.fixture
def build(people, primary):
    def make(name: str = "sales_ro") -> Instance:
        request = replica_request(primary, name, people["alice"])
        assert apply_now(request) == "applied"
        request.refresh_from_db()
        assert request.status == RequestStatus.APPLIED, request.status_detail
        return Instance.objects.get(name=name)

    return make
