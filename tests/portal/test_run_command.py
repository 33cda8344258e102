"""`manage.py run` (what `make run` calls) on a fresh state folder: up, healthy, down, up again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from provisioning.clusters import free_port

ROOT = Path(__file__).resolve().parents[2]


def _start(var_dir: Path, port: int, password: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(PORTAL_VAR_DIR=str(var_dir), PORT=str(port), PORTAL_DEMO_PASSWORD=password,
               WEB_CONCURRENCY="1", WORKER_CONCURRENCY="1")
    proc = subprocess.Popen([sys.executable, "manage.py", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = []
    deadline = time.monotonic() + 420  # generous: a loaded 2-core CI box initdbs two clusters
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if "Ctrl-C stops everything" in line:
            # keep draining in the background so the children never block on a full pipe
            subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
            return proc, "".join(output)
    proc.kill()
    raise AssertionError("run did not come up:\n" + "".join(output[-60:]))


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=180)


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def _token(base: str, username: str, password: str) -> str:
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(base + "api/v1/auth/token/", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["token"]


def _children(var_dir: Path, marker: str) -> list[int]:
    """Pids of this run's processes (PORTAL_VAR_DIR in their environment) whose command has `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"PORTAL_VAR_DIR={var_dir}".encode() in environ and marker in cmdline:
            found.append(int(entry.name))
    return found


def _postgres_processes(var_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(var_dir) in line and "grep" not in line]


@pytest.mark.slow
def test_run_comes_up_stops_cleanly_and_keeps_data_on_restart(tmp_path):
    var_dir = tmp_path / "var"
    port = free_port()
    password = "demo-password-for-test"
    base = f"http://127.0.0.1:{port}/"

    # given a fresh state folder / when the portal runs
    proc, output = _start(var_dir, port, password)
    try:
        # then the URL is printed and answers, the personas can sign in, the demo instance exists
        assert base in output
        assert password in output
        status, health = _get(base + "healthz")
        assert status == 200 and health["status"] == "ok"
        token = _token(base, "alice", password)
        _, instances = _get(base + "api/v1/instances/", token)
        demo = next(i for i in instances["results"] if i["name"] == "demo")
        assert demo["kind"] == "local" and demo["environment"] == "dev"
        # the Celery worker and beat run at a lower CPU priority than the web (WORKER_NICE, 10),
        # and so does their whole session where the kernel shares the CPU between sessions
        background = _children(var_dir, "celery -A portal worker") + _children(var_dir, "celery -A portal beat")
        web = _children(var_dir, "gunicorn")
        assert background and web
        # and they all know the printed URL, which notifications link under (PORTAL_BASE_URL)
        for pid in background + web:
            assert f"PORTAL_BASE_URL={base.rstrip('/')}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in background} == {10}
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in web} == {0}
        if Path(f"/proc/{background[0]}/autogroup").exists():
            assert {Path(f"/proc/{pid}/autogroup").read_text().split()[-1] for pid in background} == {"10"}
            assert {Path(f"/proc/{pid}/autogroup").read_text().split()[-1] for pid in web} == {"0"}
        # the demo cluster accepts a scram login on 127.0.0.1 (only with the right password)
        admin_password = (var_dir / "clusters").exists()
        assert admin_password
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host="127.0.0.1", port=demo["port"], user="postgres", password="wrong",
                            dbname="app", connect_timeout=5)
        from portal.crypto import decrypt  # noqa: F401 - the key lives in this run's var dir

        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "import psycopg; from portal.models import Instance; i=Instance.objects.get(name='demo'); "
             "c=psycopg.connect(host='127.0.0.1', port=i.port, user=i.admin_user, password=i.admin_password, "
             "dbname='app', autocommit=True); c.execute('CREATE TABLE kept_across_restarts (id int)'); "
             "c.execute('INSERT INTO kept_across_restarts VALUES (42)')"],
            cwd=ROOT, env={**os.environ, "PORTAL_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings.base",
                           "DATABASE_URL": _database_url(var_dir), "REDIS_URL": _redis_url(var_dir)},
            check=True, capture_output=True, timeout=180,
        )
    finally:
        _stop(proc)

    # then everything it started is gone
    deadline = time.monotonic() + 20
    while _postgres_processes(var_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _postgres_processes(var_dir) == []

    # when it runs again on the same folder: the data and the demo cluster are still there
    proc, output = _start(var_dir, port, password)
    try:
        token = _token(base, "alice", password)
        _, instances = _get(base + "api/v1/instances/", token)
        again = next(i for i in instances["results"] if i["name"] == "demo")
        assert again["port"] == demo["port"] and again["id"] == demo["id"]
        check = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "import psycopg; from portal.models import Instance; i=Instance.objects.get(name='demo'); "
             "c=psycopg.connect(host='127.0.0.1', port=i.port, user=i.admin_user, password=i.admin_password, "
             "dbname='app'); print(c.execute('SELECT id FROM kept_across_restarts').fetchone()[0])"],
            cwd=ROOT, env={**os.environ, "PORTAL_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings.base",
                           "DATABASE_URL": _database_url(var_dir), "REDIS_URL": _redis_url(var_dir)},
            check=True, capture_output=True, text=True, timeout=180,
        )
        assert check.stdout.strip().endswith("42")
        assert re.search(r"ready in [0-9.]+ s", output)
    finally:
        _stop(proc)


def _database_url(var_dir: Path) -> str:
    from portal.embedded import database_url

    return database_url(var_dir.resolve())


def _redis_url(var_dir: Path) -> str:
    from portal.embedded import redis_url

    return redis_url(var_dir.resolve())
