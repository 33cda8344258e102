"""The xdist scheduler of tests/fixtures/ordering.py: each file's run of tests of one kind is a work
unit, and the units keep the collection's order (pytest-django's: rolled-back, transactional, none)."""

from __future__ import annotations

from collections import OrderedDict

from tests.fixtures.ordering import FileRunScheduling


def _scheduler(collection: list[str]) -> FileRunScheduling:
    scheduler = FileRunScheduling.__new__(FileRunScheduling)  # no xdist session: only the scoping
    scheduler._scopes = None
    scheduler.collection = collection
    return scheduler


def test_each_run_of_a_file_is_its_own_unit_in_the_collection_order():
    collection = [
        "tests/a.py::test_db_1", "tests/a.py::test_db_2", "tests/b.py::test_db",  # rolled back
        "tests/a.py::test_live", "tests/c.py::test_worker",  # transactional
        "tests/a.py::test_pure", "tests/b.py::test_pure",  # no database
    ]
    scheduler = _scheduler(collection)
    units: OrderedDict[str, list[str]] = OrderedDict()
    for nodeid in collection:
        units.setdefault(scheduler._split_scope(nodeid), []).append(nodeid)
    assert list(units.values()) == [
        ["tests/a.py::test_db_1", "tests/a.py::test_db_2"], ["tests/b.py::test_db"],
        ["tests/a.py::test_live"], ["tests/c.py::test_worker"],
        ["tests/a.py::test_pure"], ["tests/b.py::test_pure"],
    ]


def test_a_class_or_a_parameter_stays_in_its_files_unit():
    collection = ["tests/a.py::Test::test_x[1]", "tests/a.py::Test::test_x[2]", "tests/a.py::test_y"]
    scheduler = _scheduler(collection)
    assert len({scheduler._split_scope(nodeid) for nodeid in collection}) == 1
