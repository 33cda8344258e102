"""A cluster of the backup tests' own: enabling WAL archiving restarts it, which the session's
shared managed cluster must not suffer."""

from __future__ import annotations

import shutil

import pytest

from tests.fixtures.clusters import fresh_cluster, instance_for


@pytest.fixture(scope="module")
def backup_cluster():
    cluster = fresh_cluster("backups", "app")
    yield cluster
    cluster.remove()
    shutil.rmtree(cluster.data_dir, ignore_errors=True)


@pytest.fixture
def backup_instance(db, backup_cluster):
    return instance_for(backup_cluster, "vault")
