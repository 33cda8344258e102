"""The benchmark's baseline: the same plan run by a bare Celery task through plain psycopg.

Loaded into the benchmark's workers with `--include bench.bare_tasks`; no claim, no marker,
no audit, no portal database: only the broker round trip and the plan's transaction.
"""

from __future__ import annotations

import psycopg

from portal.celery import app


@app.task(name="bench.bare_apply", ignore_result=True)
def bare_apply(conninfo: dict, statements: list[str], key: str) -> None:
    with psycopg.connect(**conninfo) as conn:  # one transaction, committed on exit
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO bench_done (key) VALUES (%s)", (key,))
