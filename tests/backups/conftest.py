"""A cluster of the backup tests' own: enabling WAL archiving restarts it, which the session's
shared managed cluster must not suffer."""

from __future__ import annotations

import shutil

import pytest

from portal.choices import Environment, InstanceKind, InstanceStatus
from tests.fixtures.clusters import fresh_cluster


@pytest.fixture(scope="module")
def backup_cluster():
    cluster = fresh_cluster("backups", "app")
    yield cluster
    cluster.remove()
    shutil.rmtree(cluster.data_dir, ignore_errors=True)


@pytest.fixture
def backup_instance(db, backup_cluster):
    from portal.models import Instance

    instance = Instance(
        name="vault", environment=Environment.DEV, kind=InstanceKind.LOCAL, host="127.0.0.1",
        port=backup_cluster.port, database="postgres", admin_user="postgres",
        data_dir=str(backup_cluster.data_dir), status=InstanceStatus.REACHABLE, server_version="16",
    )
    instance.admin_password = backup_cluster.admin_password
    instance.save()
    return instance
