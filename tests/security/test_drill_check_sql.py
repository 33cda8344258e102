"""The SQL a team may give as a drill check (provisioning/backups/team_checks.py): what is accepted
is normalised (calls pinned to pg_catalog), everything else is an InvalidPayload naming `sql`.
No server needed; tests/backups/test_team_checks.py runs the same refusals through the API and
what slips past them on a real restored cluster."""

from __future__ import annotations

import pytest

from portal.errors import InvalidPayload
from provisioning.backups.team_checks import clean_sql, verdict

SCHEMAS = {"pay"}

ACCEPTED = [
    ("select count(*) > 0 from pay.orders", "SELECT pg_catalog.count(*) > 0 FROM pay.orders"),
    ("SELECT o.id FROM pay.orders o JOIN pay.lines l ON l.order_id = o.id WHERE lower(o.state) = 'paid' LIMIT 1",
     "SELECT o.id FROM pay.orders AS o INNER JOIN pay.lines AS l ON l.order_id = o.id "
     "WHERE pg_catalog.lower(o.state) = 'paid' LIMIT 1"),
    ("WITH recent AS (SELECT * FROM pay.orders WHERE created_at > now() - interval '1 day') "
     "SELECT 1 FROM recent", None),
    ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT max(n) FROM t", None),
    ("SELECT 1 FROM pay.orders UNION ALL SELECT 2", None),
    ("SELECT x FROM generate_series(1, 3) AS g(x)", None),
]


@pytest.mark.parametrize(("text", "normalised"), ACCEPTED)
def test_a_plain_select_over_the_teams_schemas_is_accepted_and_normalised(text, normalised):
    result = clean_sql(text, schemas=SCHEMAS)
    if normalised is not None:
        assert result == normalised
    assert clean_sql(result, schemas=SCHEMAS) == result  # stable: what is stored passes again


REFUSED = {
    "two statements": "SELECT 1 FROM pay.orders; SELECT 2",
    "a comment hiding nothing": "/* only a comment */",
    "insert": "INSERT INTO pay.orders VALUES (1)",
    "data-modifying CTE": "WITH d AS (UPDATE pay.orders SET state = 'x' RETURNING id) SELECT * FROM d",
    "select into": "SELECT * INTO pay.copy FROM pay.orders",
    "locking": "SELECT * FROM pay.orders FOR SHARE",
    "locking in a subquery": "SELECT * FROM (SELECT * FROM pay.orders FOR UPDATE) s",
    "file read": "SELECT pg_read_binary_file('/etc/passwd')",
    "settings": "SELECT current_setting('data_directory')",
    "query string": "SELECT query_to_xml('SELECT 1', true, true, '')",
    "sleep": "SELECT pg_sleep(100)",
    "sequence write": "SELECT setval('pay.s', 1)",
    "another schema": "SELECT * FROM analytics.events",
    "the catalogs": "SELECT * FROM pg_catalog.pg_authid",
    "a bare name": "SELECT * FROM pg_authid",
    "a CTE name out of scope": "SELECT * FROM (WITH pg_authid AS (SELECT 1) SELECT 1) s, pg_authid",
    "a later sibling CTE": "WITH a AS (SELECT * FROM pg_roles), pg_roles AS (SELECT 1) SELECT * FROM a",
    "another database": "SELECT * FROM other.pay.orders",
    "a user function": "SELECT pay.evil()",
    "a user operator": "SELECT 1 OPERATOR(pay.+) 1",
    "a user type": "SELECT '1'::pay.money",
    "a parameter": "SELECT $1",
    "tablesample": "SELECT * FROM pay.orders TABLESAMPLE BERNOULLI (50)",
    "copy": "COPY pay.orders TO PROGRAM 'id'",
    "set": "SET ROLE postgres",
    "nul": "SELECT 1\x00",
    "too long": "SELECT " + "1, " * 2000 + "1",
    "nested too deeply": "SELECT " + "(SELECT " * 440 + "1" + ")" * 440,
}


@pytest.mark.parametrize("text", REFUSED.values(), ids=REFUSED.keys())
def test_anything_else_is_refused_naming_sql(text):
    with pytest.raises(InvalidPayload) as refused:
        clean_sql(text, schemas=SCHEMAS)
    assert list(refused.value.errors) == ["sql"]


@pytest.mark.parametrize(("expect", "expected", "row", "ok"), [
    ("rows", "", (1,), True), ("rows", "", None, False),
    ("no_rows", "", None, True), ("no_rows", "", ("secret",), False),
    ("equals", "2", (2,), True), ("equals", "true", (True,), True), ("equals", "null", (None,), True),
    ("equals", "3", (2,), False), ("equals", "x", None, False),
])
def test_the_verdict_never_shows_a_row_beyond_a_short_first_value(expect, expected, row, ok):
    passed, reason = verdict(expect, expected, row)
    assert passed is ok
    assert "secret" not in reason
    assert len(reason) < 120
