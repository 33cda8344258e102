"""Load: 50 simulated users on the API of a real stack (gunicorn, Celery workers, embedded PG/Redis).

    .venv/bin/python bench/load.py                 # starts `manage.py run` in a fresh temp folder
    .venv/bin/python bench/load.py --host URL      # against a running portal (PORTAL_DEMO_PASSWORD set)

Developers (alice, dave) list their requests, open one, submit schema requests; reviewers (bob,
admin) read the queue and approve, which makes the workers apply the plans to the demo cluster
for real. Prints p50 / p95 per endpoint and overall, and the errors. Goal (#19): p95 < 100 ms for
every endpoint, 0 errors.
Not part of the test suite (it measures time); the same file is the locustfile it runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_P95_MS = 100  # every endpoint's p95 at 50 users (#19)

if __name__ != "__main__":  # locust imports this file as the locustfile; the orchestrator needs no gevent
    from locust import HttpUser, between, task
else:
    HttpUser = object  # type: ignore[misc, assignment]

# Tokens come from the orchestrator: 50 users logging in at once would (rightly) hit the login throttle.
TOKENS = json.loads(os.environ.get("LOAD_TOKENS", "{}"))


if HttpUser is not object:

    class Developer(HttpUser):
        weight = 3
        wait_time = between(0.5, 1.5)

        def on_start(self) -> None:
            self.username = random.choice(["alice", "dave"])
            self.team = {"alice": "payments", "dave": "analytics"}[self.username]
            self.client.headers["Authorization"] = f"Token {TOKENS[self.username]}"
            self.own: list[int] = []

        @task(4)
        def list_requests(self) -> None:
            response = self.client.get("/api/v1/requests/", name="GET /requests/")
            if response.ok:
                self.own = [r["id"] for r in response.json()["results"]][:20]

        @task(4)
        def request_detail(self) -> None:
            if self.own:
                self.client.get(f"/api/v1/requests/{random.choice(self.own)}/", name="GET /requests/{id}/")

        @task(1)
        def list_instances(self) -> None:
            self.client.get("/api/v1/instances/", name="GET /instances/")

        @task(2)
        def submit(self) -> None:
            body = {"type": "schema", "instance": "demo", "team": self.team, "justification": "load test",
                    "payload": {"database": "app", "name": f"load_{secrets.token_hex(5)}"}}
            response = self.client.post("/api/v1/requests/", json=body, name="POST /requests/")
            if response.status_code == 201:
                self.own.insert(0, response.json()["id"])

    class Reviewer(HttpUser):
        weight = 1
        wait_time = between(0.5, 1.5)

        def on_start(self) -> None:
            self.username = random.choice(["bob", "admin"])
            self.client.headers["Authorization"] = f"Token {TOKENS[self.username]}"

        @task(3)
        def queue(self) -> None:
            self.client.get("/api/v1/requests/?status=submitted", name="GET /requests/?status=submitted")

        @task(2)
        def approve(self) -> None:
            listing = self.client.get("/api/v1/requests/?status=submitted&page_size=20",
                                      name="GET /requests/?status=submitted")
            if not listing.ok or not listing.json()["results"]:
                return
            target = random.choice(listing.json()["results"])["id"]
            with self.client.post(f"/api/v1/requests/{target}/approve/", json={"comment": "ok"},
                                  name="POST /requests/{id}/approve/", catch_response=True) as response:
                # Another reviewer may have decided it between our list and our approve: that 409 is
                # the row lock doing its job, not an error of the portal.
                if response.status_code == 409:
                    response.success()


def _start_stack(var_dir: Path, port: int, password: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(PORTAL_VAR_DIR=str(var_dir), PORT=str(port), PORTAL_DEMO_PASSWORD=password,
               PORTAL_LOG_LEVEL="WARNING")
    log_path = var_dir / "run.log"
    var_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # kept open for the child's lifetime
    proc = subprocess.Popen([sys.executable, "manage.py", "run"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if "Ctrl-C stops everything" in log_path.read_text(errors="replace"):
            return proc, log_path
        if proc.poll() is not None:
            break
        time.sleep(1)
    proc.kill()
    raise SystemExit("the portal did not come up:\n" + log_path.read_text(errors="replace")[-3000:])


def _token(host: str, username: str, password: str) -> str:
    request = urllib.request.Request(host + "/api/v1/auth/token/", method="POST",
                                     data=json.dumps({"username": username, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["token"]


_ROLES = (("gunicorn", "web (gunicorn)"), ("celery", "Celery worker/beat"), ("postgres", "PostgreSQL"),
          ("locust", "locust"), ("redis", "Redis"))


def _cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by each kind of process on the machine (Linux /proc), so the report
    shows where the cores went, and whether anything else (another test suite) shared them."""
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()  # locust runs as this process's child: its time shows here once it has ended
    used: dict[str, float] = {"locust": own.children_user + own.children_system}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        role = next((label for key, label in _ROLES if key in cmdline), "everything else")
        # Its own time and that of its children that have ended (PostgreSQL's closed backends).
        used[role] = used.get(role, 0.0) + sum(int(v) for v in fields[11:15]) / ticks
    return used


def _cpu_report(before: dict[str, float], after: dict[str, float], seconds: float) -> None:
    shares = {role: (after.get(role, 0.0) - before.get(role, 0.0)) / seconds for role in after}
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    print(f"\nCPU during the run, in cores (the machine has {os.cpu_count()}): "
          + ", ".join(f"{role} {share:.2f}" for role, share in ranked if share >= 0.005))
    print("load average after the run: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if shares.get("everything else", 0.0) > 0.2:
        print("NOTE: other processes used the cores during the run; latencies are not those of an idle machine")


def _report(csv_prefix: Path) -> int:
    rows = list(csv.DictReader(open(f"{csv_prefix}_stats.csv")))
    print(f"\n{'endpoint':45} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7}")
    for row in rows:
        print(f"{row['Name']:45} {row['Request Count']:>8} {row['Failure Count']:>6} {row['50%']:>7} {row['95%']:>7}")
    total = next(r for r in rows if r["Name"] == "Aggregated")
    errors = int(total["Failure Count"])
    failures = list(csv.DictReader(open(f"{csv_prefix}_failures.csv")))
    for failure in failures[:10]:
        print(f"  error: {failure['Method']} {failure['Name']}: {failure['Error']} ({failure['Occurrences']}x)")
    p95 = float(total["95%"])
    print(f"\noverall: {total['Request Count']} requests, {float(total['Requests/s']):.1f} req/s, "
          f"p50 {total['50%']} ms, p95 {total['95%']} ms, errors {errors}")
    slow = [row["Name"] for row in rows if row["Name"] != "Aggregated" and float(row["95%"]) >= GOAL_P95_MS]
    print(f"goal p95 < {GOAL_P95_MS} ms on every endpoint: "
          + ("met" if not slow and p95 < GOAL_P95_MS else "NOT met (" + ", ".join(slow or ["Aggregated"]) + ")")
          + f"; 0 errors: {'met' if errors == 0 else 'NOT met'}")
    return 0 if errors == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="a running portal; default: start one in a temporary folder")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dbportal-load-"))
    stack = None
    try:
        if args.host:
            host, password = args.host.rstrip("/"), os.environ["PORTAL_DEMO_PASSWORD"]
        else:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            password = secrets.token_urlsafe(12)
            print(f"starting the portal in {work} on port {port} ...", flush=True)
            stack, _ = _start_stack(work / "var", port, password)
            host = f"http://127.0.0.1:{port}"
        tokens = {name: _token(host, name, password) for name in ("alice", "dave", "bob", "admin")}
        csv_prefix = work / "load"
        env = {**os.environ, "LOAD_TOKENS": json.dumps(tokens)}
        print(f"locust: {args.users} users for {args.seconds} s against {host}; load average before: "
              + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
        cpu_before, started = _cpu_by_role(), time.monotonic()
        subprocess.run([sys.executable, "-m", "locust", "-f", __file__, "--headless", "--host", host,
                        "-u", str(args.users), "-r", str(max(1, args.users // 5)), "-t", f"{args.seconds}s",
                        "--csv", str(csv_prefix), "--only-summary", "--loglevel", "WARNING"],
                       cwd=ROOT, env=env, check=False)
        _cpu_report(cpu_before, _cpu_by_role(), time.monotonic() - started)
        return _report(csv_prefix)
    finally:
        if stack is not None:
            os.killpg(stack.pid, signal.SIGTERM)
            try:
                stack.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
