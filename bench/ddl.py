#!/usr/bin/env python
"""DDL request benchmark (outside the test suite): the submit-time costs of a DDL request.

    .venv/bin/python bench/ddl.py [--rounds 200]

1. The pure pipeline per request (parse, scope checks, normalise with round-trip proof, rules,
   render) for a typical 4-statement request and for a 100-statement one.
2. On the machine's PostgreSQL at 127.0.0.1:5432 (trust auth; skipped when absent): reading the
   table facts (own connection, read-only) and the dry run (own connection, run + ROLLBACK) for
   the typical request, against a 100,000-row table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")

TYPICAL = """
CREATE TABLE invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL,
                       amount numeric(12, 2) NOT NULL CHECK (amount >= 0), created timestamptz DEFAULT now());
ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu';
CREATE VIEW big_invoices AS SELECT id, customer FROM invoices WHERE amount > 1000;
CREATE INDEX CONCURRENTLY orders_region_idx ON orders (region);
"""


def timed(fn, rounds: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of this process): the machine is shared, CPU time is steadier."""
    wall, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    from provisioning.ddl import parse, rules, scope
    from provisioning.plans import ddl, plan_text

    def pipeline(text: str) -> None:
        statements = parse.parse(text)
        scope.check(statements, schema="payments")
        normalised = [parse.normalise(s) for s in statements]
        rules.ddl_risk(rules.evaluate(normalised, facts={}))
        plan_text(ddl.render({"database": "app", "schema": "payments", "owner_role": "payments_owner", "sql": text}))

    many = ";\n".join(f"ALTER TABLE orders ADD COLUMN c{i} int DEFAULT {i}" for i in range(100))
    for label, text in (("typical (4 statements)", TYPICAL), ("100 statements", many)):
        median, cpu = timed(lambda text=text: pipeline(text), args.rounds)
        print(f"pipeline {label}: median {median:.2f} ms wall, {cpu:.2f} ms CPU over {args.rounds} rounds")

    import psycopg
    from psycopg import sql

    try:
        admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True,
                                connect_timeout=2)
    except psycopg.Error:
        print("no PostgreSQL at 127.0.0.1:5432: cluster figures skipped")
        return
    from provisioning.ddl import dry_run, facts

    name = f"bench_ddl_{secrets.token_hex(3)}"
    schema, owner = sql.Identifier(name), sql.Identifier(f"{name}_owner")
    try:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(owner))
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, owner))
        admin.execute(sql.SQL("CREATE TABLE {}.orders (id int PRIMARY KEY, note text)").format(schema))
        admin.execute(sql.SQL("ALTER TABLE {}.orders OWNER TO {}").format(schema, owner))
        admin.execute(sql.SQL("INSERT INTO {}.orders SELECT g, 'n' FROM generate_series(1, 100000) g").format(schema))
        admin.execute(sql.SQL("ANALYZE {}.orders").format(schema))
        os.environ["PGPASSFILE"] = os.devnull
        instance = SimpleNamespace(host="127.0.0.1", port=5432, database="postgres", admin_user="postgres",
                                   admin_password="", environment="dev")
        statements = parse.parse(TYPICAL)
        tables = scope.referenced_tables(statements)
        rounds = max(10, args.rounds // 10)
        median, cpu = timed(lambda: facts.fetch_facts(instance, database="postgres", schema=name, tables=tables),
                            rounds)
        print(f"table facts (connect + 2 catalog queries): median {median:.2f} ms wall, {cpu:.2f} ms CPU")
        payload = {"database": "postgres", "schema": name, "owner_role": f"{name}_owner", "sql": TYPICAL}
        results = []
        median, cpu = timed(lambda: results.append(dry_run.run(instance, payload)), rounds)
        assert all(r["ok"] for r in results), results[-1]
        print(f"dry run (connect, 3 statements incl. a NOT NULL DEFAULT column on 100k rows, ROLLBACK): "
              f"median {median:.2f} ms wall, {cpu:.2f} ms CPU")
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(owner))
        admin.close()


if __name__ == "__main__":
    import django

    django.setup()
    main()
