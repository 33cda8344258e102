"""The function allow-list of requester SQL: what it accepts, and that docs/ddl.md prints it as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioning.ddl import functions

DOC = Path(__file__).resolve().parents[2] / "docs" / "ddl.md"


def test_docs_print_every_group_of_the_list_exactly():
    rows = dict(re.findall(r"^\| ([a-z][a-z -]+) \| ([a-z0-9_, ]+?)(?: \(.*\))? \|$", DOC.read_text(), re.M))
    for group, names in functions.ALLOWED_FUNCTIONS.items():
        assert set(rows[group].split(", ")) == set(names), group


@pytest.mark.parametrize("name, ok", [
    ("now", True), ("NOW", True), ("lower", True), ("gen_random_uuid", True), ("nextval", True),
    ("ts_rewrite", False), ("set_config", False), ("pg_read_file", False), ("pg_sleep", False),
    ("query_to_xml", False), ("current_setting", False), ("lastval", False), ("dblink", False),
    ("xmlparse", False), ("lo_import", False), ("my_function", False),
])
def test_only_listed_built_ins_are_allowed(name, ok):
    assert functions.allowed(name) is ok
