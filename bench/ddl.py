#!/usr/bin/env python
"""DDL request benchmark (outside the test suite): the submit-time costs of a DDL request.

    .venv/bin/python bench/ddl.py [--rounds 200]

1. The pure pipeline per request (parse, scope checks incl. the function allow-list, normalise
   with round-trip proof, rules, render) for a typical 4-statement request and a 100-statement one.
2. On the machine's PostgreSQL at 127.0.0.1:5432 (trust auth; skipped when absent), with the
   bench's own embedded portal database under var/bench-ddl: reading the table facts, and the
   portal's dry run (aligning the team's executor login, connecting as it, run + ROLLBACK)
   against the bare baseline (the same statements over a plain psycopg connection as the
   superuser, SET LOCAL ROLE, run + ROLLBACK), against a 100,000-row table; the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var" / "bench-ddl"
os.environ["PORTAL_VAR_DIR"] = str(VAR)
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.base"
for name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(name, None)

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
    from django.core.management import call_command

    from portal.choices import Environment, InstanceKind, InstanceStatus
    from portal.models import Instance, ManagedSchema, Team
    from provisioning import dry_run
    from provisioning.ddl import facts
    from provisioning.models import ExecutorLogin
    from provisioning.plans import ddl as ddl_plan

    call_command("migrate", verbosity=0)
    name = f"bench_ddl_{secrets.token_hex(3)}"
    schema, owner = sql.Identifier(name), sql.Identifier(f"{name}_owner")
    login_role = None
    try:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(owner))
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, owner))
        admin.execute(sql.SQL("CREATE TABLE {}.orders (id int PRIMARY KEY, note text)").format(schema))
        admin.execute(sql.SQL("ALTER TABLE {}.orders OWNER TO {}").format(schema, owner))
        admin.execute(sql.SQL("INSERT INTO {}.orders SELECT g, 'n' FROM generate_series(1, 100000) g").format(schema))
        admin.execute(sql.SQL("ANALYZE {}.orders").format(schema))
        instance, _ = Instance.objects.update_or_create(name="bench-pg", defaults=dict(
            environment=Environment.DEV, kind=InstanceKind.EXTERNAL, host="127.0.0.1", port=5432,
            database="postgres", admin_user="postgres", status=InstanceStatus.REACHABLE))
        team, _ = Team.objects.get_or_create(name="bench")
        ManagedSchema.objects.filter(instance=instance, team=team).delete()
        ManagedSchema.objects.create(instance=instance, team=team, database="postgres", name=name,
                                     owner_role=f"{name}_owner")
        statements = parse.parse(TYPICAL)
        tables = scope.referenced_tables(statements)
        rounds = max(10, args.rounds // 10)
        median, cpu = timed(lambda: facts.fetch_facts(instance, database="postgres", schema=name, tables=tables),
                            rounds)
        print(f"table facts (connect + 2 catalog queries): median {median:.2f} ms wall, {cpu:.2f} ms CPU")
        payload = {"database": "postgres", "schema": name, "owner_role": f"{name}_owner", "sql": TYPICAL}
        steps = [step for step in ddl_plan.render(payload) if step.transactional]

        def bare() -> None:
            with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres") as conn:
                for step in steps:
                    conn.execute(step.statement)
                conn.rollback()

        results = []
        bare_ms, bare_cpu = timed(bare, rounds)
        median, cpu = timed(lambda: results.append(dry_run.run(instance, team, payload)), rounds)
        assert all(r["ok"] for r in results), results[-1]
        login_role = ExecutorLogin.objects.get(instance=instance, team=team).role
        print(f"dry run, bare (superuser connect, SET LOCAL ROLE, 3 statements incl. a NOT NULL DEFAULT column on "
              f"100k rows, ROLLBACK): median {bare_ms:.2f} ms wall, {bare_cpu:.2f} ms CPU")
        print(f"dry run, portal (align the executor login, connect as it, the same, ROLLBACK): "
              f"median {median:.2f} ms wall, {cpu:.2f} ms CPU; ratio {median / bare_ms:.2f}x")
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        if login_role:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login_role)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login_role)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(owner))
        admin.close()


if __name__ == "__main__":
    from portal.embedded import ensure_embedded, ensure_keys

    # The bench's own keys and portal database under var/bench-ddl (importing settings starts nothing).
    ensure_keys()
    ensure_embedded()
    import django

    django.setup()
    main()
