"""Scope of DDL requests: the allow-list of statement kinds and names kept inside the schema."""

from __future__ import annotations

import pytest

from portal.errors import InvalidPayload
from provisioning.ddl import parse, scope

SCHEMA = "payments"


def rules_of(text: str) -> list[str]:
    return [v.rule for statement in parse.parse(text) for v in scope.violations(statement, SCHEMA)]


def refusal(text: str) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        scope.check(parse.parse(text), schema=SCHEMA)
    return caught.value


REFUSED = [
    ("CREATE ROLE evil SUPERUSER", "scope.roles"),
    ("CREATE USER evil PASSWORD 'x'", "scope.roles"),
    ("CREATE GROUP g", "scope.roles"),
    ("ALTER ROLE payments_owner SUPERUSER", "scope.roles"),
    ("ALTER USER alice SET search_path = public", "scope.roles"),
    ("DROP ROLE payments_reader", "scope.roles"),
    ("DROP USER x", "scope.roles"),
    ("GRANT payments_owner TO alice", "scope.roles"),
    ("GRANT SELECT ON t TO public", "scope.privileges"),
    ("REVOKE SELECT ON t FROM payments_reader", "scope.privileges"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO public", "scope.privileges"),
    ("CREATE POLICY p ON t USING (true)", "scope.privileges"),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", "scope.privileges"),
    ("ALTER TABLE t OWNER TO postgres", "scope.ownership"),
    ("ALTER TYPE e OWNER TO postgres", "scope.ownership"),
    ("ALTER SYSTEM SET work_mem = '1GB'", "scope.server"),
    ("LOAD 'auto_explain'", "scope.server"),
    ("CHECKPOINT", "scope.server"),
    ("CREATE TABLESPACE ts LOCATION '/tmp'", "scope.server"),
    ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()", "scope.server"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER w", "scope.server"),
    ("CREATE PUBLICATION pub FOR ALL TABLES", "scope.server"),
    ("COPY t FROM '/etc/passwd'", "scope.copy"),
    ("COPY (SELECT 1) TO PROGRAM 'id'", "scope.copy"),
    ("DO $$ BEGIN PERFORM 1; END $$", "scope.do_block"),
    ("SET search_path TO public", "scope.session"),
    ("SET ROLE postgres", "scope.session"),
    ("RESET ROLE", "scope.session"),
    ("SET SESSION AUTHORIZATION postgres", "scope.session"),
    ("RESET ALL", "scope.session"),
    ("SET LOCAL statement_timeout = 0", "scope.session"),
    ("SHOW search_path", "scope.session"),
    ("DISCARD ALL", "scope.session"),
    ("CREATE EXTENSION pg_trgm", "scope.extension"),
    ("DROP EXTENSION plpgsql", "scope.extension"),
    ("CREATE DATABASE other", "scope.database"),
    ("DROP DATABASE app", "scope.database"),
    ("ALTER DATABASE app SET search_path = public", "scope.database"),
    ("CREATE SCHEMA other", "scope.schema"),
    ("DROP SCHEMA payments", "scope.schema"),
    ("ALTER SCHEMA payments RENAME TO p2", "scope.schema"),
    ("ALTER TABLE t SET SCHEMA public", "scope.schema"),
    ("BEGIN", "scope.transaction"),
    ("COMMIT", "scope.transaction"),
    ("ROLLBACK", "scope.transaction"),
    ("SAVEPOINT a", "scope.transaction"),
    ("LOCK TABLE t", "scope.transaction"),
    ("VACUUM t", "scope.maintenance"),
    ("VACUUM FULL pg_catalog.pg_class", "scope.maintenance"),
    ("CLUSTER t USING t_pkey", "scope.maintenance"),
    ("REINDEX TABLE t", "scope.maintenance"),
    ("LISTEN ch", "scope.notify"),
    ("NOTIFY ch", "scope.notify"),
    ("UNLISTEN *", "scope.notify"),
    ("SELECT 1", "scope.dml"),
    ("INSERT INTO t VALUES (1)", "scope.dml"),
    ("UPDATE t SET x = 1", "scope.dml"),
    ("DELETE FROM t", "scope.dml"),
    ("EXPLAIN ANALYZE SELECT 1", "scope.dml"),
    ("CALL p()", "scope.dml"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "scope.function"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS $$BEGIN RETURN 1; END$$",
     "scope.function"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'f'", "scope.function"),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", "scope.function"),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "scope.function"),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", "scope.function"),
    ("DROP FUNCTION f()", "scope.function"),
    ("ALTER TABLE t DISABLE TRIGGER ALL", "scope.function"),
    ("CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)", "scope.function"),
    ("CREATE TEMP TABLE tmp (x int)", "scope.temporary"),
    ("CREATE TABLE t (x int) TABLESPACE pg_default", "scope.tablespace"),
    ("CREATE INDEX i ON t (x) TABLESPACE fast", "scope.tablespace"),
    ("ALTER TABLE t SET TABLESPACE fast", "scope.tablespace"),
    ("DROP TABLE t CASCADE", "scope.cascade"),
    ("TRUNCATE t CASCADE", "scope.cascade"),
    ("ALTER TABLE t DROP COLUMN c CASCADE", "scope.cascade"),
    ("CREATE INDEX CONCURRENTLY ON t (x)", "scope.index_name"),
    ("ALTER TABLE t DETACH PARTITION p CONCURRENTLY", "scope.subcommand_not_allowed"),
    ("PREPARE q AS SELECT 1", "scope.dml"),
    ("SECURITY LABEL ON TABLE t IS 'x'", "scope.privileges"),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER x INTO payments", "scope.server"),
    ("CREATE STATISTICS st ON a, b FROM t", "scope.server"),
    ("REASSIGN OWNED BY a TO b", "scope.roles"),
    ("DROP OWNED BY a", "scope.roles"),
]


@pytest.mark.parametrize(("statement", "rule"), REFUSED)
def test_refused_statement_kinds_name_their_rule(statement, rule):
    # given a statement the DDL allow-list refuses, when it is checked
    error = refusal(statement)
    # then the 400 names the rule id and points at the statement
    assert rule in rules_of(statement)
    assert f"[{rule}]" in error.errors["payload.sql"][0]
    assert error.errors["payload.sql"][0].startswith("statement 1 (")


SCOPE_ESCAPES = [
    ("CREATE TABLE other_schema.t (id int PRIMARY KEY)", "scope.other_schema"),
    ("DROP TABLE other_schema.t", "scope.other_schema"),
    ("ALTER TABLE analytics.events ADD COLUMN x int", "scope.other_schema"),
    ("CREATE INDEX i ON analytics.events (id)", "scope.other_schema"),
    ("TRUNCATE analytics.events", "scope.other_schema"),
    ("COMMENT ON TABLE analytics.events IS 'x'", "scope.other_schema"),
    ("COMMENT ON COLUMN analytics.events.id IS 'x'", "scope.other_schema"),
    ("ALTER TABLE analytics.events RENAME TO e2", "scope.other_schema"),
    ("ALTER TABLE pg_catalog.pg_authid ADD COLUMN x int", "scope.system_catalog"),
    ("DROP TABLE pg_catalog.pg_authid", "scope.system_catalog"),
    ("CREATE VIEW v AS SELECT rolpassword FROM pg_catalog.pg_authid", "scope.system_catalog"),
    ("CREATE VIEW v AS SELECT rolpassword FROM pg_authid", "scope.system_catalog"),
    ("CREATE VIEW v AS SELECT * FROM information_schema.tables", "scope.system_catalog"),
    ("CREATE VIEW v AS SELECT * FROM other_schema.secrets", "scope.other_schema"),
    ("CREATE VIEW v AS SELECT * FROM t WHERE id IN (SELECT id FROM other_schema.x)", "scope.other_schema"),
    ("CREATE VIEW v AS WITH c AS (SELECT * FROM other_schema.x) SELECT * FROM c", "scope.other_schema"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM analytics.events", "scope.other_schema"),
    ("CREATE TABLE t2 AS SELECT * FROM analytics.events", "scope.other_schema"),
    ("CREATE TABLE t (id int PRIMARY KEY, o int REFERENCES other_schema.owners (id))", "scope.other_schema"),
    ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (o) REFERENCES other_schema.owners (id)", "scope.other_schema"),
    ("CREATE TABLE t (x other.typ)", "scope.other_schema"),
    ("ALTER TABLE t ALTER COLUMN x TYPE other.typ", "scope.other_schema"),
    ("CREATE TABLE t (x text COLLATE other.c)", "scope.other_schema"),
    ("CREATE TABLE t (x int DEFAULT other.f())", "scope.function_call"),
    ("CREATE TABLE t (x bigint DEFAULT nextval('other.seq'))", "scope.other_schema"),
    ("CREATE TABLE t (x regclass DEFAULT 'other.t'::regclass)", "scope.other_schema"),
    ("CREATE TABLE t (x int) INHERITS (other.parent)", "scope.other_schema"),
    ("CREATE TABLE t PARTITION OF other.parent FOR VALUES IN (1)", "scope.other_schema"),
    ("CREATE TABLE t (LIKE other.parent)", "scope.other_schema"),
    ("CREATE INDEX i ON t (x other.ops)", "scope.other_schema"),
    ("CREATE VIEW v AS SELECT 1 OPERATOR(other.+) 1", "scope.other_schema"),
    ("ALTER SEQUENCE s OWNED BY other.t.c", "scope.other_schema"),
    ("CREATE TYPE other.e AS ENUM ('a')", "scope.other_schema"),
    ("DROP TYPE other.e", "scope.other_schema"),
    ("CREATE DOMAIN other.d AS int", "scope.other_schema"),
    ("CREATE TABLE app2.payments.t (id int)", "scope.cross_database"),
    ("CREATE VIEW v AS SELECT pg_read_file('/etc/passwd')", "scope.function_call"),
    ("CREATE TABLE t AS SELECT set_config('role', 'postgres', true)", "scope.function_call"),
    ("CREATE TABLE t (x text DEFAULT pg_catalog.set_config('role', 'postgres', false))", "scope.function_call"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM query_to_xml('select 1', true, true, '')", "scope.function_call"),
    ("CREATE VIEW v AS SELECT pg_sleep(100)", "scope.function_call"),
    ("CREATE VIEW v AS SELECT dblink('x', 'y')", "scope.function_call"),
    ("CREATE TABLE t (r regrole)", "scope.roles"),
]


@pytest.mark.parametrize(("statement", "rule"), SCOPE_ESCAPES)
def test_names_outside_the_schema_are_refused(statement, rule):
    assert rule in rules_of(statement)
    refusal(statement)


ALLOWED = [
    "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL DEFAULT '')",
    "CREATE TABLE payments.t (id int PRIMARY KEY, created timestamptz DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, x pg_catalog.int4, y numeric(10, 2) CHECK (y > 0))",
    "CREATE TABLE t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), o int REFERENCES owners (id) ON DELETE SET NULL)",
    "CREATE TABLE t (id int PRIMARY KEY, s bigint DEFAULT nextval('payments.seq'))",
    "CREATE TABLE t (id int PRIMARY KEY, x text COLLATE \"C\")",
    "CREATE TABLE t (id int, PRIMARY KEY (id)) PARTITION BY RANGE (id)",
    "ALTER TABLE t ADD COLUMN note text",
    "ALTER TABLE t ADD COLUMN n int NOT NULL DEFAULT 0, ADD CONSTRAINT n_pos CHECK (n >= 0)",
    "ALTER TABLE t ALTER COLUMN note SET DEFAULT 'x', ALTER COLUMN note SET NOT NULL",
    "ALTER TABLE t ALTER COLUMN note DROP NOT NULL",
    "ALTER TABLE t ALTER COLUMN note TYPE varchar(200)",
    "ALTER TABLE t DROP COLUMN note",
    "ALTER TABLE t DROP CONSTRAINT n_pos",
    "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (o) REFERENCES payments.owners (id) NOT VALID",
    "ALTER TABLE t VALIDATE CONSTRAINT fk",
    "ALTER TABLE t RENAME COLUMN a TO b",
    "ALTER TABLE t RENAME TO t2",
    "ALTER TABLE t RENAME CONSTRAINT a TO b",
    "ALTER INDEX i RENAME TO j",
    "ALTER TABLE t SET (fillfactor = 70)",
    "CREATE INDEX i ON t (lower(name))",
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t USING btree (name) WHERE name <> ''",
    "CREATE INDEX g ON t USING gin (doc jsonb_path_ops)",
    "DROP INDEX i",
    "DROP INDEX CONCURRENTLY IF EXISTS i",
    "CREATE VIEW v AS SELECT id, name FROM t WHERE name <> ''",
    "CREATE OR REPLACE VIEW v AS SELECT t.id, o.name FROM t JOIN payments.owners o ON o.id = t.o",
    "CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t",
    "REFRESH MATERIALIZED VIEW mv",
    "DROP VIEW v",
    "DROP MATERIALIZED VIEW mv",
    "CREATE SEQUENCE s START 100",
    "ALTER SEQUENCE s OWNED BY t.id",
    "DROP SEQUENCE s",
    "CREATE TYPE mood AS ENUM ('sad', 'ok')",
    "ALTER TYPE mood ADD VALUE 'happy'",
    "CREATE TYPE pair AS (a int, b text)",
    "CREATE DOMAIN pos AS int CHECK (VALUE > 0)",
    "DROP TYPE mood",
    "COMMENT ON TABLE t IS 'payments'",
    "COMMENT ON COLUMN t.id IS 'key'",
    "COMMENT ON COLUMN payments.t.id IS 'key'",
    "TRUNCATE t",
    "DROP TABLE IF EXISTS t, payments.u",
]


@pytest.mark.parametrize("statement", ALLOWED)
def test_ddl_inside_the_schema_is_allowed(statement):
    statements = parse.parse(statement)
    scope.check(statements, schema=SCHEMA)  # does not raise
    assert rules_of(statement) == []


def test_every_refused_statement_of_a_request_is_listed():
    # given a request mixing allowed and refused statements
    error = refusal("CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO public; SET ROLE postgres")
    # then each refused statement is listed with its index, and the allowed one is not
    messages = error.errors["payload.sql"]
    assert len(messages) == 2
    assert messages[0].startswith("statement 2 (GRANT SELECT ON t TO public): [scope.privileges]")
    assert messages[1].startswith("statement 3 (SET ROLE postgres): [scope.session]")


def test_statement_kinds_not_on_the_allow_list_are_refused_by_default():
    # given statement kinds nobody thought to list explicitly
    for text in ("CREATE CONVERSION c FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8",
                 "CREATE TEXT SEARCH DICTIONARY d (TEMPLATE = simple)", "ALTER TABLE t ATTACH PARTITION x DEFAULT"):
        kinds = rules_of(text)
        # then they are refused unless the allow-list has them (ATTACH PARTITION is allowed)
        if "ATTACH" in text:
            assert kinds == []
        else:
            assert kinds and kinds[0].startswith("scope.")


def test_concurrent_indexes_must_come_last():
    # given a CREATE INDEX CONCURRENTLY followed by a transactional statement
    error = refusal("CREATE INDEX CONCURRENTLY i ON t (x); ALTER INDEX i RENAME TO j")
    # then it is refused, since the index would only exist after the transaction
    assert "[scope.concurrent_index_last]" in error.errors["payload.sql"][0]
    assert error.errors["payload.sql"][0].startswith("statement 2 (")
    scope.check(parse.parse("ALTER TABLE t ADD COLUMN x int; CREATE INDEX CONCURRENTLY i ON t (x);"
                            "CREATE INDEX CONCURRENTLY j ON t (id)"), schema=SCHEMA)


def test_drop_index_concurrently_must_come_last_too():
    error = refusal("DROP INDEX CONCURRENTLY i; CREATE TABLE u (id int PRIMARY KEY)")
    assert "[scope.concurrent_index_last]" in error.errors["payload.sql"][0]
    scope.check(parse.parse("CREATE TABLE u (id int PRIMARY KEY); DROP INDEX CONCURRENTLY i;"
                            "CREATE INDEX CONCURRENTLY j ON u (id)"), schema=SCHEMA)
