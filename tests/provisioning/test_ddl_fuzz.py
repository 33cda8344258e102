"""Property tests: no SQL text makes the DDL parser, scope checks, rules or renderer fail but with InvalidPayload."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portal.errors import InvalidPayload
from provisioning.ddl import parse, rules, scope
from provisioning.plans import ddl, plan_text
from tests.provisioning.test_ddl_scope import ALLOWED, REFUSED, SCOPE_ESCAPES

SCHEMA = "payments"
FACTS = {name: rules.TableFacts(rows=rows, pages=rows // 50, has_rows=rows > 0,
                                columns={"c": rules.ColumnFacts("varchar", 24), "note": rules.ColumnFacts("text")})
         for name, rows in (("t", 10), ("orders", 1_000_000), ("owners", 0))}

CORPUS = ALLOWED + [text for text, _ in REFUSED] + [text for text, _ in SCOPE_ESCAPES]
TOKENS = ["CREATE", "TABLE", "INDEX", "CONCURRENTLY", "DROP", "ALTER", "COLUMN", "TYPE", "ADD", "NOT", "NULL",
          "DEFAULT", "PRIMARY", "KEY", "REFERENCES", "VIEW", "AS", "SELECT", "FROM", "ON", "(", ")", ",", ";", ".",
          "'", '"', "$$", "--", "/*", "*/", "other", "pg_catalog", "payments", "t", "x", "int", "text", "CASCADE",
          "SET", "ROLE", "GRANT", "TO", "ONLY", "IF", "EXISTS", "USING", "WITH", "RECURSIVE", "::", "regclass",
          "nextval", "OPERATOR", "COLLATE", "\\", "é", "\x00", "1e309", "TEMP", "RENAME", "COMMENT", "IS"]


def pipeline(text: str) -> list[str] | None:
    """Everything a submit does with the SQL except touching a cluster; None when refused with a 400."""
    try:
        statements = parse.parse(text)
        scope.check(statements, schema=SCHEMA)
        normalised = [parse.normalise(s) for s in statements]
        findings = rules.evaluate(normalised, facts=FACTS)
        rules.ddl_risk(findings)
        payload = {"database": "app", "schema": SCHEMA, "owner_role": "payments_owner", "sql": text}
        plan = plan_text(ddl.render(payload))
        numbered = ddl.numbered_steps(payload)
    except InvalidPayload as exc:
        assert exc.errors and all(isinstance(m, str) and m for m in exc.errors["payload.sql"])
        return None
    user_steps = [step.text for index, step in numbered if index is not None]
    # the portal's lines: search_path, role, RESET ROLE, one drop-if-INVALID before each concurrent build,
    # and around the concurrent steps a session SET ROLE and its RESET
    drops = [step.text for index, step in numbered if index is None and step.only_if is not None]
    builds = [line for line in user_steps if line.startswith(("CREATE INDEX CONCURRENTLY",
                                                              "CREATE UNIQUE INDEX CONCURRENTLY"))]
    assert len(drops) == len(builds) and all(d.startswith("DROP INDEX CONCURRENTLY IF EXISTS ") for d in drops)
    # whatever passed: each rendered user statement parses back to one statement that passes again
    loose = any(not step.transactional for index, step in numbered if index is not None)
    assert len(user_steps) == len(plan) - 3 - len(drops) - (2 if loose else 0)
    for line in user_steps:
        again = parse.parse(line)
        assert len(again) == 1
        scope.check(again, schema=SCHEMA)
    return plan


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate", "token"]))
        if action == "insert":
            text = text[:position] + draw(st.text(max_size=5)) + text[position:]
        elif action == "delete":
            end = draw(st.integers(min_value=position, max_value=min(len(text), position + 12)))
            text = text[:position] + text[end:]
        elif action == "duplicate":
            text = text + ";" + text[position:]
        else:
            text = text[:position] + " " + draw(st.sampled_from(TOKENS)) + " " + text[position:]
    return text


FUZZ = settings(max_examples=int(os.environ.get("DDL_FUZZ_EXAMPLES", "400")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=200))
@example("")
@example(";;;")
@example("CREATE TABLE t (" * 2000)
@example("CREATE VIEW v AS SELECT " + "(" * 5000 + "1" + ")" * 5000)
@example("CREATE TABLE \"" + "x" * 70 + "\" (id int)")
@example("COMMENT ON TABLE t IS $$;DROP TABLE t$$")
@example("CREATE TABLE \ud800 (id int)")
def test_random_text_only_ever_gives_invalid_payload(text):
    pipeline(text)


@FUZZ
@given(mutated())
def test_mutated_real_statements_only_ever_give_invalid_payload(text):
    pipeline(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join))
def test_token_soup_only_ever_gives_invalid_payload(text):
    pipeline(text)


def test_the_corpus_itself_passes_or_is_refused_as_expected():
    assert all(pipeline(text) is not None for text in ALLOWED)
    assert all(pipeline(text) is None for text, _ in REFUSED + SCOPE_ESCAPES)
