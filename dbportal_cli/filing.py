"""Filing requests (`dbportal request ...`, or `--preview` them), following them (`wait`, `secret`)
and deciding them (`approve`, `reject`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from dbportal_cli.base import (
    LONG_POLL_SECONDS,
    TERMINAL_BAD,
    TERMINAL_OK,
    Context,
    cli,
    fail,
    output_option,
    read_document,
    run,
)
from dbportal_cli.client import REQUEST_ENDED_BADLY, TIMED_OUT

# --- filing requests -------------------------------------------------------------------------------

def _common(function):
    for option in reversed([
        click.option("--instance", help="instance name or id"),
        click.option("--team", help="your team (name or id)"),
        click.option("--justification", "-j", help="why the change is needed (required to file)"),
        click.option("--file", "-f", "file_", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="YAML or JSON with instance, team, justification and payload (flags override)"),
        click.option("--preview", is_flag=True, help="print the plan, risk and approvers; file nothing"),
    ]):
        function = option(function)
    return function


def _file_request(ctx: Context, kind: str, common: dict[str, Any], payload: dict[str, Any]) -> None:
    body: dict[str, Any] = {}
    if common.get("file_"):
        document = read_document(common["file_"])
        if not isinstance(document, dict):
            fail(f"{common['file_']}: an object with instance, team, justification and payload", 6)
        body.update({k: document[k] for k in ("instance", "team", "justification") if k in document})
        payload = {**(document.get("payload") or {}), **payload}
    for key in ("instance", "team", "justification"):
        if common.get(key) is not None:
            body[key] = common[key]
    body.update({"type": kind, "payload": payload})
    for key in ("instance", "team"):
        if key not in body:
            fail(f"{key}: required (--{key} or in --file)", 6)
    client = ctx.client()
    if common.get("preview"):
        body.pop("justification", None)
        answer = run(ctx, lambda: client.post("requests/preview/", body))
        ctx.emit(answer, _plan_text(answer))
        return
    if not body.get("justification"):
        fail("justification: required to file (--justification or in --file); --preview needs none", 6)
    answer = run(ctx, lambda: client.post("requests/", body))
    ctx.emit(answer, [f"request #{answer['id']} {answer['status']} (risk {answer.get('risk')})",
                      _plan_text(answer), f"follow it: dbportal wait {answer['id']}"])


def _plan_text(answer: dict[str, Any]) -> str:
    lines = []
    for step in answer.get("plan") or []:
        statement = step.get("statement", step) if isinstance(step, dict) else step
        lines.append(f"  {statement}")
    review = answer.get("review") or {}
    approvals = answer.get("approvals_required") or review.get("approvals_required")
    lines.insert(0, f"plan ({answer.get('plan_hash', '')[:12]}), risk {answer.get('risk')}"
                    + (f", {approvals} approval(s) needed" if approvals else ""))
    for reason in answer.get("risk_reasons") or []:
        lines.append(f"  risk: {reason}")
    approvers = review.get("approver_groups") or answer.get("approver_groups")
    if approvers:
        lines.append(f"  approvers: {', '.join(approvers)}")
    return "\n".join(lines)


def _tables(value: str | None) -> Any:
    if value in (None, "", "all"):
        return "all"
    return [t.strip() for t in value.split(",") if t.strip()]


@cli.group()
def request() -> None:
    """File a request (or --preview it)."""


@request.command("schema")
@_common
@click.option("--database")
@click.option("--name", help="the new schema's name")
@click.option("--owner-role", help="the owner role (default: <name>_owner, created)")
@output_option
@click.pass_obj
def request_schema(ctx: Context, database, name, owner_role, **common) -> None:
    """A new schema (and its owner role)."""
    _file_request(ctx, "schema", common, _given(database=database, name=name, owner_role=owner_role))


@request.command("role")
@_common
@click.option("--name")
@click.option("--login/--no-login", default=False, show_default=True,
              help="a login role gets a generated password (dbportal secret)")
@click.option("--member-of", multiple=True, help="a group role to join (repeat)")
@click.option("--connection-limit", type=int)
@click.option("--valid-until", help="ISO 8601 time the login stops working")
@output_option
@click.pass_obj
def request_role(ctx: Context, name, login, member_of, connection_limit, valid_until, **common) -> None:
    """A new role."""
    _file_request(ctx, "role", common, _given(name=name, login=login, member_of=list(member_of) or None,
                                             connection_limit=connection_limit, valid_until=valid_until))


def _access_options(function):
    for option in reversed([
        click.option("--role"), click.option("--database"), click.option("--schema"),
        click.option("--privilege", "privileges", multiple=True, help="SELECT, INSERT, ... (repeat)"),
        click.option("--tables", help='"all" (default) or a comma-separated list'),
        click.option("--default-privileges/--no-default-privileges", default=None,
                     help="also for tables created later"),
    ]):
        function = option(function)
    return function


@request.command("grant")
@_common
@_access_options
@click.option("--expires-at", help="ISO 8601 time the grant ends by itself")
@output_option
@click.pass_obj
def request_grant(ctx: Context, role, database, schema, privileges, tables, default_privileges, expires_at,
                  **common) -> None:
    """Privileges on a schema's tables for a role."""
    _file_request(ctx, "grant", common, _given(
        role=role, database=database, schema=schema, privileges=[p.upper() for p in privileges] or None,
        tables=_tables(tables) if tables is not None else None, default_privileges=default_privileges,
        expires_at=expires_at))


@request.command("revoke")
@_common
@_access_options
@output_option
@click.pass_obj
def request_revoke(ctx: Context, role, database, schema, privileges, tables, default_privileges, **common) -> None:
    """Take privileges back."""
    _file_request(ctx, "revoke", common, _given(
        role=role, database=database, schema=schema, privileges=[p.upper() for p in privileges] or None,
        tables=_tables(tables) if tables is not None else None, default_privileges=default_privileges))


@request.command("ddl")
@_common
@click.option("--database")
@click.option("--schema")
@click.option("--sql", "sql_text", help="the statements")
@click.option("--sql-file", type=click.File("r"), help="the statements from a file (- for standard input)")
@output_option
@click.pass_obj
def request_ddl(ctx: Context, database, schema, sql_text, sql_file, **common) -> None:
    """A schema change (reviewed SQL)."""
    if sql_file is not None:
        sql_text = sql_file.read()
    _file_request(ctx, "ddl", common, _given(database=database, schema=schema, sql=sql_text))


@request.command("replica")
@_common
@click.option("--name", help="the new replica's instance name")
@output_option
@click.pass_obj
def request_replica(ctx: Context, name, **common) -> None:
    """A read replica of the instance."""
    _file_request(ctx, "replica", common, _given(name=name))


def _given(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@request.command("show")
@click.argument("request_id", type=int)
@output_option
@click.pass_obj
def request_show(ctx: Context, request_id: int) -> None:
    """One request with its plan, approvals and executions."""
    client = ctx.client()
    answer = run(ctx, lambda: client.get(f"requests/{request_id}/"))
    ctx.emit(answer, _request_text(answer))


def _request_text(answer: dict[str, Any]) -> list[str]:
    lines = [f"#{answer['id']} {answer['type']} on {answer.get('instance')} for {answer.get('team')}: "
             f"{answer['status']}", f"  justification: {answer.get('justification', '')}", _plan_text(answer)]
    for approval in answer.get("approvals") or []:
        lines.append(f"  {approval.get('decision')} by {approval.get('reviewer')}: {approval.get('comment', '')}")
    if answer.get("status_detail"):
        lines.append(f"  detail: {answer['status_detail']}")
    return lines


# --- following and deciding -----------------------------------------------------------------------

@cli.command()
@click.argument("request_id", type=int)
@click.option("--timeout", type=click.IntRange(1), help="give up after this many seconds (exit 11)")
@output_option
@click.pass_obj
def wait(ctx: Context, request_id: int, timeout: int | None) -> None:
    """Follow a request until it ends (exit 0 applied, 10 rejected/cancelled/failed)."""
    client = ctx.client()
    deadline = time.monotonic() + timeout if timeout else None
    answer = run(ctx, lambda: client.get(f"requests/{request_id}/"))
    live = sys.stderr.isatty() and not ctx.json
    last = None
    while answer["status"] not in TERMINAL_OK | TERMINAL_BAD:
        if answer["status"] != last:
            last = answer["status"]
            line = f"#{request_id}: {last}"
            click.echo(f"\r{line:<60}" if live else line, err=True, nl=not live)
        if deadline is not None and time.monotonic() >= deadline:
            if live:
                click.echo("", err=True)
            ctx.emit(answer)
            fail(f"#{request_id}: still {answer['status']} after {timeout}s", TIMED_OUT)
        seconds = LONG_POLL_SECONDS if deadline is None else max(1, min(LONG_POLL_SECONDS,
                                                                         int(deadline - time.monotonic())))
        status = answer["status"]
        answer = run(ctx, lambda seconds=seconds, status=status: client.request(
            "GET", f"requests/{request_id}/", params={"wait": seconds, "status": status},
            timeout=seconds + 30).json())
    if live:
        click.echo("", err=True)
    ctx.emit(answer, f"#{request_id}: {answer['status']}"
             + (f" ({answer['status_detail']})" if answer.get("status_detail") else ""))
    if answer["status"] in TERMINAL_BAD:
        sys.exit(REQUEST_ENDED_BADLY)


@cli.command()
@click.argument("request_id", type=int)
@output_option
@click.pass_obj
def secret(ctx: Context, request_id: int) -> None:
    """Reveal the generated password of a login role you requested (once)."""
    client = ctx.client()
    answer = run(ctx, lambda: client.get(f"requests/{request_id}/secret/"))
    ctx.emit(answer, answer["password"])


def _decide(ctx: Context, request_id: int, verb: str, comment: str | None, yes: bool) -> None:
    client = ctx.client()
    answer = run(ctx, lambda: client.get(f"requests/{request_id}/"))
    if not ctx.json:
        click.echo("\n".join(_request_text(answer)), err=True)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"{verb}: confirm with --yes when not at a terminal", 2)
        click.confirm(f"{verb} request #{request_id}?", abort=True, err=True)
    if comment is None:
        comment = "" if verb == "approve" else click.prompt("Comment", err=True)
    decided = run(ctx, lambda: client.post(f"requests/{request_id}/{verb}/", {"comment": comment}))
    ctx.emit(decided, f"#{request_id}: {decided['status']}")


@cli.command()
@click.argument("request_id", type=int)
@click.option("--comment", "-m")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@output_option
@click.pass_obj
def approve(ctx: Context, request_id: int, comment: str | None, yes: bool) -> None:
    """Approve a request after reading its plan."""
    _decide(ctx, request_id, "approve", comment, yes)


@cli.command()
@click.argument("request_id", type=int)
@click.option("--comment", "-m", help="why (required)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@output_option
@click.pass_obj
def reject(ctx: Context, request_id: int, comment: str | None, yes: bool) -> None:
    """Reject a request after reading its plan."""
    _decide(ctx, request_id, "reject", comment, yes)
