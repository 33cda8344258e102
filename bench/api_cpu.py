"""CPU and queries per call of the load test's endpoints, in process: the web's side and PostgreSQL's.

    PORTAL_VAR_DIR=var/perf .venv/bin/python manage.py migrate          # once: a state folder of your own
    PORTAL_VAR_DIR=var/perf .venv/bin/python manage.py seed_demo
    PORTAL_VAR_DIR=var/perf .venv/bin/python bench/api_cpu.py --seed 300  # once: requests to list and open
    PORTAL_VAR_DIR=var/perf .venv/bin/python bench/api_cpu.py             # this tree
    PORTAL_VAR_DIR=var/perf .venv/bin/python bench/api_cpu.py --tree A=/tmp/base --tree B=. --rounds 6

The endpoints and personas of bench/load.py (list, detail, instances as alice; the review queue and
approve as bob; submit as alice), called through Django's test client with the settings of
`manage.py run` (DEBUG off, every middleware). Per call: the web's CPU (this thread's run time)
and the PostgreSQL backend's (its /proc schedstat run time, which includes the audit chainer's
statements on the same connection), and the queries Django logs. Not the Celery work an approval
triggers (the outbox message is sent; no worker runs here) nor gunicorn's own HTTP parsing.

Several trees (--tree NAME=PATH, e.g. a `git worktree` of the commit before a change) run in turn,
round after round, in fresh processes on the same database: compare them within one run, the
machine is shared. Not part of the test suite (it measures time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("instances", "list", "detail", "queue", "queue20", "submit", "approve")


def _backend_ns(pid: int) -> int:
    """Run time so far of a process (ns), from the scheduler's own accounting (no 10 ms ticks)."""
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0])


def _thread_ns() -> int:
    return time.thread_time_ns()


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")
    os.environ.setdefault("PORTAL_DEBUG", "0")  # as `manage.py run` starts the demo
    os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()


def _clients() -> dict:
    from django.contrib.auth.models import User
    from django.test import Client

    clients = {}
    for name in ("alice", "bob"):
        user = User.objects.get(username=name)
        try:
            from portal.services.tokens import token_create
        except ImportError:  # a tree from before the portal's own tokens (2026-12-04): DRF's
            from rest_framework.authtoken.models import Token

            key = Token.objects.get_or_create(user=user)[0].key
        else:
            key = token_create(user=user, name=f"api_cpu {os.getpid()}")[1]
        clients[name] = Client(HTTP_AUTHORIZATION=f"Token {key}")
    return clients


def _submit_body(token: str) -> dict:
    return {
        "type": "schema",
        "instance": "demo",
        "team": "payments",
        "justification": "load test",
        "payload": {"database": "app", "name": f"cpu_{token}"},
    }


def seed(count: int) -> None:
    """`count` requests of alice's: a third left submitted, the rest approved, some applied."""
    import secrets

    from portal.models import ChangeRequest
    from provisioning.tasks import apply_request

    clients = _clients()
    for index in range(count):
        answer = clients["alice"].post(
            "/api/v1/requests/", _submit_body(secrets.token_hex(5)), content_type="application/json"
        )
        assert answer.status_code == 201, answer.content[:300]
        if index % 3:
            request_id = answer.json()["id"]
            approved = clients["bob"].post(
                f"/api/v1/requests/{request_id}/approve/", {"comment": "ok"}, content_type="application/json"
            )
            assert approved.status_code == 200, approved.content[:300]
            if index % 6 == 1:  # applied for real, with its execution rows (the load's workers do)
                row = ChangeRequest.objects.get(pk=request_id)
                apply_request.apply(args=[row.pk, row.plan_hash])
    print(f"seeded {count} requests")


def child(calls: int, warmup: int, chainer: bool) -> dict:
    """Time every endpoint `calls` times (after `warmup` untimed rounds); one JSON line out.

    chainer=False: the audit chainer does not run after a write's commit (the beat task chains
    later). It runs at most once per interval per process, so which write pays for it depends on
    the timing of the loop: two trees of different speed put it on different endpoints."""
    import secrets

    if not chainer:
        from audit import chainer as audit_chainer

        audit_chainer.AFTER_COMMIT_INTERVAL = float("inf")

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    clients = _clients()
    alice, bob = clients["alice"], clients["bob"]
    own = [r["id"] for r in alice.get("/api/v1/requests/").json()["results"]][:20]
    pending: list[int] = []

    def call(name: str):
        if name == "instances":
            return alice.get("/api/v1/instances/")
        if name == "list":
            return alice.get("/api/v1/requests/")
        if name == "detail":
            return alice.get(f"/api/v1/requests/{own[len(pending) % len(own)]}/")
        if name == "queue":
            return bob.get("/api/v1/requests/?status=submitted")
        if name == "queue20":
            return bob.get("/api/v1/requests/?status=submitted&page_size=20")
        if name == "submit":
            answer = alice.post(
                "/api/v1/requests/", _submit_body(secrets.token_hex(5)), content_type="application/json"
            )
            pending.append(answer.json()["id"])
            return answer
        return bob.post(
            f"/api/v1/requests/{pending.pop()}/approve/", {"comment": "ok"}, content_type="application/json"
        )

    expected = {"submit": 201}
    queries: dict[str, int] = {}
    for round_number in range(warmup + 1):
        for name in ENDPOINTS:
            if round_number == warmup:
                with CaptureQueriesContext(connection) as captured:
                    response = call(name)
                queries[name] = len(captured)
            else:
                response = call(name)
            assert response.status_code == expected.get(name, 200), (name, response.content[:300])
    web: dict[str, list[int]] = {name: [] for name in ENDPOINTS}
    database: dict[str, list[int]] = {name: [] for name in ENDPOINTS}
    for _ in range(calls):
        for name in ENDPOINTS:
            connection.ensure_connection()
            pid = connection.connection.info.backend_pid
            db_before, web_before = _backend_ns(pid), _thread_ns()
            response = call(name)
            web_after = _thread_ns()
            db_after = _backend_ns(pid) if connection.connection is not None else db_before
            assert response.status_code == expected.get(name, 200), (name, response.content[:300])
            web[name].append(web_after - web_before)
            database[name].append(db_after - db_before)
    return {"web": web, "db": database, "queries": queries}


def _summary(samples: list[int]) -> tuple[float, float]:
    return statistics.median(samples) / 1e6, statistics.fmean(samples) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH[:VAR_DIR]",
        help="a source tree to measure (repeat for A/B), with its own state folder when its "
        "migrations differ; default: this one",
    )
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree, taken in turn")
    parser.add_argument("--calls", type=int, default=40, help="timed calls per endpoint and process")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, help="only seed this many requests (once, before measuring)")
    parser.add_argument(
        "--no-chainer",
        action="store_true",
        help="no audit chainer run after a write's commit (see child()); its cost is then not counted",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        _setup_django()
        seed(args.seed)
        return 0
    if args.child:
        _setup_django()
        print(json.dumps(child(args.calls, args.warmup, not args.no_chainer)))
        return 0

    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this", str(ROOT))]
    var_dirs = {name: path.partition(":")[2] or os.environ.get("PORTAL_VAR_DIR", "") for name, path in trees}
    trees = [(name, path.partition(":")[0]) for name, path in trees]
    results: dict[str, dict] = {name: {"web": {}, "db": {}, "queries": {}} for name, _ in trees}
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    for round_number in range(args.rounds):
        for name, path in trees:
            out = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "api_cpu.py"),
                    "--child",
                    "--calls",
                    str(args.calls),
                    "--warmup",
                    str(args.warmup),
                    *(["--no-chainer"] if args.no_chainer else []),
                ],
                cwd=path,
                env={**os.environ, "PORTAL_VAR_DIR": var_dirs[name]},
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(f"{name}: the measuring process failed:\n{out.stderr[-3000:]}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            for side in ("web", "db"):
                for endpoint, samples in measured[side].items():
                    results[name][side].setdefault(endpoint, []).extend(samples)
            results[name]["queries"] = measured["queries"]
            print(f"round {round_number + 1}/{args.rounds}: {name} done", flush=True)
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(
        f"\nms per call, median / mean over {args.rounds} x {args.calls} calls; web = Django thread, "
        "db = PostgreSQL backend; q = queries"
    )
    header = f"{'endpoint':10}" + "".join(f" | {name + ' web':>14} {name + ' db':>12} {'q':>3}" for name, _ in trees)
    print(header)
    for endpoint in ENDPOINTS:
        line = f"{endpoint:10}"
        for name, _ in trees:
            web_median, web_mean = _summary(results[name]["web"][endpoint])
            db_median, db_mean = _summary(results[name]["db"][endpoint])
            line += f" | {web_median:6.2f}/{web_mean:6.2f} {db_median:5.2f}/{db_mean:5.2f} {results[name]['queries'][endpoint]:>3}"
        print(line)
    if len(trees) > 1:
        base = trees[0][0]
        for name, _ in trees[1:]:
            ratios = []
            for endpoint in ENDPOINTS:
                web = _summary(results[name]["web"][endpoint])[0] / _summary(results[base]["web"][endpoint])[0]
                total_new = _summary(results[name]["web"][endpoint])[1] + _summary(results[name]["db"][endpoint])[1]
                total_base = _summary(results[base]["web"][endpoint])[1] + _summary(results[base]["db"][endpoint])[1]
                ratios.append(f"{endpoint} web {web:.2f} web+db {total_new / total_base:.2f}")
            print(f"\n{name} / {base} (median web; mean web+db): " + "; ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
