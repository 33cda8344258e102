"""The `dbportal` command line (#22) as a subprocess against a running portal (live server), a real
Celery worker and a real cluster: log in, preview, file, wait, approve, reveal; access as code
(plan, apply, apply again, change the file, apply: a grant is narrowed through a revoke)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from portal.models import ChangeRequest, ChangeSet
from tests.fixtures.people import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DBPORTAL = Path(sys.executable).parent / "dbportal"  # the console script `make venv` installs


class Cli:
    def __init__(self, home: Path, url: str) -> None:
        self.home, self.url = home, url

    def __call__(self, *args: str, stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBPORTAL_")}
        env["XDG_CONFIG_HOME"] = str(self.home)
        done = subprocess.run([str(DBPORTAL), "--url", self.url, *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=180)
        if expect is not None:
            assert done.returncode == expect, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "--output", "json").stdout)


@pytest.fixture
def cli_for(tmp_path, live_server, people):
    def make(username: str) -> Cli:
        cli = Cli(tmp_path / username, live_server.url)
        cli("login", "--username", username, "--password-stdin", stdin=PASSWORD + "\n")
        return cli

    return make


def test_file_wait_approve_and_reveal_from_a_terminal(cli_for, managed_cluster, managed_instance, celery_worker,
                                                      tmp_path):
    name = f"cli_{uuid.uuid4().hex[:8]}"
    alice, bob = cli_for("alice"), cli_for("bob")
    config = tmp_path / "alice" / "dbportal" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700

    assert "demo" in [i["name"] for i in alice.json("instances")]
    common = ["--instance", "demo", "--team", "payments"]
    preview = alice("request", "role", *common, "--name", name, "--login", "--preview").stdout
    assert f'CREATE ROLE "{name}"' in preview and "risk" in preview
    assert not ChangeRequest.objects.exists()

    # a bad value: exit 6 and the field named, nothing filed
    refused = alice("request", "grant", *common, "--role", "nobody_here", "--database", "app", "--schema", "nope",
                    "--privilege", "SELECT", "-j", "x", expect=6)
    assert "payload.role" in refused.stderr
    assert alice("request", "role", *common, "--name", name, "--login", expect=6).stderr.startswith("justification")

    filed = alice.json("request", "role", *common, "--name", name, "--login", "-j", "the ledger service logs in")
    assert filed["status"] == "submitted"
    # the requester cannot approve her own request; a reviewer reads the plan and approves
    assert alice("approve", str(filed["id"]), "--yes", "-m", "mine", expect=4).returncode == 4
    approved = bob("approve", str(filed["id"]), "--yes", "-m", "fine")
    assert f'CREATE ROLE "{name}"' in approved.stderr and "queued" in approved.stdout

    followed = alice("wait", str(filed["id"]), "--timeout", "120")
    assert f"#{filed['id']}: applied" in followed.stdout
    password = alice("secret", str(filed["id"])).stdout.strip()
    assert alice("secret", str(filed["id"]), expect=7).returncode == 7  # shown once
    with psycopg.connect(host="127.0.0.1", port=managed_cluster.port, dbname="app", user=name, password=password,
                         passfile="/dev/null") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name

    assert name in [r["name"] for r in alice.json("access")["roles"]]
    assert alice.json("requests", "--status", "applied")[0]["id"] == filed["id"]
    assert "_DBPORTAL_COMPLETE" in alice("completion", "bash").stdout

    # a rejected request ends `wait` with exit 10
    second = alice.json("request", "role", *common, "--name", f"{name}_x", "-j", "a second one")
    bob("reject", str(second["id"]), "--yes", "-m", "not needed")
    assert alice("wait", str(second["id"]), expect=10).returncode == 10

    # an auditor exports the log to a file
    carol = cli_for("carol")
    target = tmp_path / "audit.jsonl"
    carol("audit", "export", "--format", "jsonl", "-o", str(target))
    actions = {json.loads(line)["action"] for line in target.read_text().splitlines()}
    assert {"request.submitted", "request.approved", "request.applied"} <= actions
    assert alice("audit", "export", "-o", str(tmp_path / "no.csv"), expect=4).returncode == 4


def _apply_and_approve(alice: Cli, bob: Cli, path: Path) -> list[int]:
    applied = alice.json("apply", str(path), "--yes")
    ids = [r["id"] for r in applied["requests"]]
    for request_id in ids:
        bob("approve", str(request_id), "--yes", "-m", "as declared")
    for request_id in ids:
        alice("wait", str(request_id), "--timeout", "120")
    return ids


def test_access_as_code_plan_apply_idempotent_and_narrowed(cli_for, managed_cluster, managed_instance,
                                                           celery_worker, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    schema, role = f"data_{suffix}", f"svc_{suffix}"
    alice, bob = cli_for("alice"), cli_for("bob")
    desired = {"version": 1, "instance": "demo", "team": "payments", "justification": "declared in git",
               "schemas": [{"database": "app", "name": schema}],
               "roles": [{"name": role, "login": False}],
               "grants": [{"role": role, "database": "app", "schema": schema, "privileges": ["SELECT", "INSERT"]}]}
    path = tmp_path / "payments.yaml"
    path.write_text(yaml.safe_dump(desired))

    plan = alice("plan", str(path)).stdout
    assert f"+ schema: database=app, name={schema}" in plan and f"+ role: name={role}" in plan
    assert "~ grant:" in plan and "apply again" in plan
    assert not ChangeRequest.objects.exists()

    # first apply: the schema and the role, as one change set; the grant waits for them
    first = _apply_and_approve(alice, bob, path)
    assert len(first) == 2 and ChangeSet.objects.count() == 1
    with psycopg.connect(managed_cluster.socket_conninfo("app"), autocommit=True) as admin:
        admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(f"{schema}_owner")))
        admin.execute(sql.SQL("CREATE TABLE {}.ledger (id int)").format(sql.Identifier(schema)))
    # second apply: the grant
    second = _apply_and_approve(alice, bob, path)
    assert [ChangeRequest.objects.get(pk=i).type for i in second] == ["grant"]
    # third: nothing to file
    before = ChangeRequest.objects.count()
    nothing = alice.json("apply", str(path), "--yes")
    assert nothing["id"] is None and nothing["requests"] == [] and ChangeRequest.objects.count() == before

    def privileges() -> set[str]:
        with psycopg.connect(managed_cluster.socket_conninfo("app")) as conn:
            return {p for p in ("SELECT", "INSERT") if conn.execute(
                "SELECT has_table_privilege(%s, %s, %s)", (role, f"{schema}.ledger", p)).fetchone()[0]}

    assert privileges() == {"SELECT", "INSERT"}
    # the file now declares read-only access: one revoke of INSERT
    desired["grants"][0]["privileges"] = ["SELECT"]
    path.write_text(yaml.safe_dump(desired))
    assert f"- revoke: role={role}, database=app, schema={schema}, privileges=INSERT" in alice("plan", str(path)).stdout
    narrowed = _apply_and_approve(alice, bob, path)
    assert [ChangeRequest.objects.get(pk=i).type for i in narrowed] == ["revoke"]
    assert privileges() == {"SELECT"}
    assert alice.json("apply", str(path), "--yes")["requests"] == []
