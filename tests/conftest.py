"""Shared test setup: fixtures live in tests/fixtures/ and are loaded here."""

import itertools
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.embedded",  # first: the servers the test settings point at
    "tests.fixtures.people",
    "tests.fixtures.clusters",
    "tests.fixtures.celery",
    "tests.fixtures.ordering",  # xdist: every worker keeps pytest-django's order
]

# Fixtures that reach a server: the portal database, a PostgreSQL cluster, Celery, Chromium.
_SERVER_FIXTURES = {
    "db", "transactional_db", "django_db_setup", "live_server", "client", "admin_client", "admin_user",
    "django_user_model", "celery_workers", "celery_worker", "publishing_to", "fresh_cluster", "managed_cluster",
    "managed_instance", "external_pg", "people", "api_for", "web_for", "browser", "page", "login",
}


def pytest_collection_modifyitems(config, items):
    """Mark `unit` every test that needs no server: `make check` runs them first (`pytest -m unit`).

    Decided from what a test asks for, so a new test is sorted without anyone remembering a
    marker; pytest-django refuses database access to any test without the django_db mark, so
    a test wrongly sorted here fails instead of quietly using the database.
    """
    for item in items:
        if any(item.get_closest_marker(name) for name in ("django_db", "e2e", "slow")):
            continue
        if _SERVER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def _audit_checkpoint_dirs(tmp_path_factory) -> tuple[Path, itertools.count]:
    return tmp_path_factory.mktemp("audit-checkpoints"), itertools.count()


@pytest.fixture(autouse=True)
def _audit_checkpoints_per_test(_audit_checkpoint_dirs, settings):
    """Each test writes audit checkpoints (files outside the database, audit/checkpoints.py) to its
    own folder: a test's rolled-back events must not meet another test's checkpoints.

    Numbered folders under one session folder: tmp_path_factory.mktemp lists the whole base temp
    folder to number a new one, and one a test for ~2,240 tests made that quadratic (~4 s idle),
    slowing every tmp_path after it too."""
    base, numbers = _audit_checkpoint_dirs
    path = base / str(next(numbers))
    path.mkdir()
    settings.AUDIT_CHECKPOINT_DIR = path
