"""Parsing DDL requests with PostgreSQL's parser: errors with positions, statements in order."""

from __future__ import annotations

import pytest

from portal.errors import InvalidPayload
from provisioning.ddl import parse


def error_of(text) -> str:
    with pytest.raises(InvalidPayload) as caught:
        parse.parse(text)
    assert list(caught.value.errors) == ["payload.sql"]
    return caught.value.errors["payload.sql"][0]


def test_syntax_error_names_the_token_position_line_and_column():
    message = error_of("CREATE TABLE t (id int PRIMARY KEY);\nCREATE TABL u (id int)")
    assert message == 'syntax error at or near "TABL" (position 45 / line 2 col 8)'


def test_syntax_error_at_the_end_of_the_input():
    message = error_of("CREATE TABLE t (id int")
    assert message.startswith("syntax error at end of input (position ")


def test_statements_keep_their_order_source_and_index():
    statements = parse.parse("create table a (id int);\n\n-- a comment\nALTER TABLE a ADD COLUMN b text;drop table a")
    assert [s.index for s in statements] == [1, 2, 3]
    assert [s.kind for s in statements] == ["CreateStmt", "AlterTableStmt", "DropStmt"]
    assert statements[1].source == "ALTER TABLE a ADD COLUMN b text"
    assert statements[2].excerpt == "drop table a"


def test_normalised_text_is_the_deparsed_tree_not_the_input():
    (statement,) = parse.parse("create   table /* hidden */ T ( ID int  primary key ) ; ")
    assert parse.normalise(statement).text == "CREATE TABLE t (id integer PRIMARY KEY)"


def test_a_second_statement_in_a_string_stays_a_string():
    (statement,) = parse.parse("COMMENT ON TABLE t IS 'x''; DROP TABLE t; --'")
    assert parse.normalise(statement).text == "COMMENT ON TABLE t IS 'x''; DROP TABLE t; --'"


@pytest.mark.parametrize("text", ["", "   \n", None, 42, ["CREATE TABLE t ()"]])
def test_missing_sql_is_refused(text):
    assert error_of(text) == "enter at least one SQL statement"


def test_only_comments_is_refused():
    assert "only comments" in error_of("-- nothing here\n/* nor here */")


def test_nul_character_is_refused_because_the_parser_would_stop_there():
    assert "NUL" in error_of("CREATE TABLE t (id int);\x00 DROP TABLE t")


def test_identifiers_longer_than_63_bytes_are_refused_not_truncated():
    long_name = "a" * 64
    assert "longer than 63 bytes" in error_of(f"CREATE TABLE {long_name} (id int)")
    assert "longer than 63 bytes" in error_of(f'CREATE TABLE "{"é" * 32}" (id int)')
    parse.parse(f"CREATE TABLE {'a' * 63} (id int)")  # 63 is fine


def test_too_much_sql_is_refused():
    assert "at most" in error_of("CREATE TABLE t (id int);" * 5000)


def test_line_col_counts_from_one():
    assert parse.line_col("ab\ncd", 0) == (1, 1)
    assert parse.line_col("ab\ncd", 4) == (2, 2)


def test_unpaired_surrogate_is_refused_not_a_500():
    assert "surrogate" in error_of("CREATE TABLE t (id int); COMMENT ON TABLE t IS '\ud800'")
