"""Shared test setup: fixtures live in tests/fixtures/ and are loaded here."""

pytest_plugins = [
    "tests.fixtures.people",
    "tests.fixtures.clusters",
    "tests.fixtures.celery",
]
