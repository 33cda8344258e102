"""Review rules of DDL requests: each with a case that fires and one that does not."""

from __future__ import annotations

import pytest

from provisioning.ddl import parse, rules
from provisioning.ddl.rules import ColumnFacts, TableFacts

EMPTY = TableFacts(rows=0, pages=0, has_rows=False)
SMALL = TableFacts(rows=50, pages=1, has_rows=True)
BIG = TableFacts(rows=2_000_000, pages=40_000, has_rows=True)


def fired(text: str, facts=None, enabled=None) -> list[str]:
    return [f.rule for f in rules.evaluate(parse.parse(text), facts=facts or {}, enabled=enabled)]


# (rule, firing SQL, facts, quiet SQL, facts)
CASES = [
    ("ddl.drop_table", "DROP TABLE orders", {}, "DROP VIEW order_totals", {}),
    ("ddl.drop_column", "ALTER TABLE orders DROP COLUMN note", {}, "ALTER TABLE orders DROP CONSTRAINT c", {}),
    ("ddl.truncate", "TRUNCATE orders", {}, "COMMENT ON TABLE orders IS 'x'", {}),
    ("ddl.column_type_rewrite", "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
     {"orders": TableFacts(rows=5, has_rows=True, columns={"amount": ColumnFacts("int4")})},
     "ALTER TABLE orders ALTER COLUMN note TYPE varchar(200)",
     {"orders": TableFacts(rows=5, has_rows=True, columns={"note": ColumnFacts("varchar", 104)})}),
    ("ddl.add_column_not_null_without_default", "ALTER TABLE orders ADD COLUMN region text NOT NULL",
     {"orders": SMALL}, "ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu'", {"orders": SMALL}),
    ("ddl.index_without_concurrently", "CREATE INDEX orders_note_idx ON orders (note)", {"orders": BIG},
     "CREATE INDEX CONCURRENTLY orders_note_idx ON orders (note)", {"orders": BIG}),
    ("ddl.table_without_primary_key", "CREATE TABLE audit_trail (at timestamptz, what text)", {},
     "CREATE TABLE audit_trail (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, what text)", {}),
    ("ddl.naming", 'CREATE TABLE "Orders" (id int PRIMARY KEY)', {},
     "CREATE TABLE orders_2024 (id int PRIMARY KEY)", {}),
]


@pytest.mark.parametrize(("rule", "hit", "hit_facts", "quiet", "quiet_facts"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_its_case_and_not_on_the_safe_variant(rule, hit, hit_facts, quiet, quiet_facts):
    assert rule in fired(hit, hit_facts)
    assert rule not in fired(quiet, quiet_facts)


def test_every_rule_has_a_case():
    assert {c[0] for c in CASES} == set(rules.RULES)


def test_finding_points_at_the_statement_with_index_and_excerpt():
    (finding,) = rules.evaluate(parse.parse("CREATE TABLE a (id int PRIMARY KEY);\nDROP   TABLE  a"), facts={})
    assert finding.rule == "ddl.drop_table" and finding.severity == "high"
    assert finding.statement_index == 2
    assert finding.excerpt == "DROP TABLE a"
    assert finding.message == "statement 2 (DROP TABLE a): drops table a and all its data"


def test_not_null_column_on_an_empty_or_new_table_is_fine():
    assert fired("ALTER TABLE orders ADD COLUMN region text NOT NULL", {"orders": EMPTY}) == []
    assert fired("CREATE TABLE n (id int PRIMARY KEY); ALTER TABLE n ADD COLUMN region text NOT NULL",
                 {"n": SMALL}) == []
    assert "ddl.add_column_not_null_without_default" not in fired(
        "ALTER TABLE orders ADD COLUMN id2 bigint GENERATED ALWAYS AS IDENTITY NOT NULL", {"orders": SMALL})
    assert "ddl.add_column_not_null_without_default" in fired(
        "ALTER TABLE orders ADD COLUMN k int PRIMARY KEY", {"orders": SMALL})


def test_plain_index_on_a_small_table_is_fine():
    assert fired("CREATE INDEX i ON orders (note)", {"orders": SMALL}) == []
    assert fired("CREATE INDEX i ON orders (note)", {}) == []
    by_pages = TableFacts(rows=10, pages=rules.LARGE_TABLE_PAGES, has_rows=True)
    assert fired("CREATE INDEX i ON orders (note)", {"orders": by_pages}) == ["ddl.index_without_concurrently"]


def test_warning_suggests_concurrently_with_the_index_name():
    (finding,) = rules.evaluate(parse.parse("CREATE INDEX orders_note_idx ON orders (note)"), facts={"orders": BIG})
    assert "CREATE INDEX CONCURRENTLY orders_note_idx" in finding.message


@pytest.mark.parametrize(("old", "new", "rewrites"), [
    (ColumnFacts("varchar", 24), "varchar(30)", False),
    (ColumnFacts("varchar", 24), "varchar(10)", True),
    (ColumnFacts("varchar", 24), "text", False),
    (ColumnFacts("varchar", -1), "text", False),
    (ColumnFacts("text"), "varchar", False),
    (ColumnFacts("text"), "varchar(10)", True),
    (ColumnFacts("numeric", ((10 << 16) | 2) + 4), "numeric(12, 2)", False),
    (ColumnFacts("numeric", ((10 << 16) | 2) + 4), "numeric(12, 3)", True),
    (ColumnFacts("numeric", ((10 << 16) | 2) + 4), "numeric", False),
    (ColumnFacts("int4"), "int8", True),
    (ColumnFacts("int4"), "integer", False),
    (None, "text", True),
])
def test_type_change_rewrite_detection(old, new, rewrites):
    columns = {"c": old} if old else {}
    facts = {"t": TableFacts(rows=1, has_rows=True, columns=columns)}
    assert ("ddl.column_type_rewrite" in fired(f"ALTER TABLE t ALTER COLUMN c TYPE {new}", facts)) is rewrites


def test_type_change_with_using_always_rewrites():
    facts = {"t": TableFacts(rows=1, has_rows=True, columns={"c": ColumnFacts("text")})}
    assert fired("ALTER TABLE t ALTER COLUMN c TYPE varchar USING c::varchar", facts) == ["ddl.column_type_rewrite"]


def test_type_change_on_a_table_created_in_the_same_request_is_fine():
    assert fired("CREATE TABLE t (id int PRIMARY KEY, c int); ALTER TABLE t ALTER COLUMN c TYPE bigint") == []


def test_primary_key_added_later_in_the_request_counts():
    assert fired("CREATE TABLE t (id int); ALTER TABLE t ADD PRIMARY KEY (id)") == []
    assert fired("CREATE TABLE t (id int, PRIMARY KEY (id))") == []
    assert fired("CREATE TABLE t AS SELECT 1 AS id") == ["ddl.table_without_primary_key"]


@pytest.mark.parametrize("text", [
    "CREATE TABLE t (id int PRIMARY KEY, \"Name\" text)",
    "CREATE TABLE t (id int, CONSTRAINT \"PK\" PRIMARY KEY (id))",
    "CREATE INDEX \"IX\" ON t (id)",
    "CREATE VIEW \"V\" AS SELECT 1 AS x",
    "CREATE SEQUENCE \"S-1\"",
    "CREATE TYPE \"Mood\" AS ENUM ('a')",
    "CREATE DOMAIN \"D\" AS int",
    "ALTER TABLE t ADD COLUMN \"X\" int",
    "ALTER TABLE t RENAME TO \"T2\"",
    "CREATE TABLE pg_things (id int PRIMARY KEY)",
    "CREATE TABLE \"order\" (id int PRIMARY KEY)",
    "CREATE TABLE t (id int PRIMARY KEY, \"user\" text)",
])
def test_naming_rule_catches_new_names(text):
    assert "ddl.naming" in fired(text)


def test_disabled_rules_do_not_fire():
    assert fired("DROP TABLE orders", enabled={"ddl.truncate"}) == []
    assert fired("DROP TABLE orders", enabled=set(rules.RULES)) == ["ddl.drop_table"]


def test_risk_from_findings():
    assert rules.ddl_risk([]) == ("low", [])
    low, _ = rules.ddl_risk(rules.evaluate(parse.parse("CREATE TABLE t (id int PRIMARY KEY)")))
    assert low == "low"
    medium, reasons = rules.ddl_risk(rules.evaluate(parse.parse("CREATE TABLE t (id int)")))
    assert medium == "medium" and reasons[0].startswith("ddl.table_without_primary_key: statement 1")
    high, reasons = rules.ddl_risk(rules.evaluate(parse.parse("CREATE TABLE t (id int); DROP TABLE u")))
    assert high == "high" and len(reasons) == 2
    # findings stored as dicts (ChangeRequest.findings) rate the same
    assert rules.ddl_risk([f.as_dict() for f in rules.evaluate(parse.parse("TRUNCATE t"))])[0] == "high"


def test_portal_risk_rates_ddl_by_its_findings():
    from portal.risk import risk_assess

    def rate(text, environment="dev"):
        findings = [f.as_dict() for f in rules.evaluate(parse.parse(text))]
        return risk_assess(request_type="ddl", payload={"sql": text}, environment=environment, team_id=1,
                           owner_team_id=None, findings=findings)

    assert rate("CREATE TABLE t (id int PRIMARY KEY)") == ("low", [])
    risk, reasons = rate("CREATE TABLE t (id int)")
    assert risk == "medium" and reasons[0].startswith("ddl.table_without_primary_key")
    risk, reasons = rate("DROP TABLE t")
    assert risk == "high" and reasons == ["ddl.drop_table: statement 1 (DROP TABLE t): drops table t and all its data"]
    risk, reasons = rate("CREATE TABLE t (id int PRIMARY KEY)", environment="prod")
    assert risk == "high" and "production instance" in reasons[0]
