"""The `dbportal` command (Click). Every command talks to the REST API only, with the caller's token;
`--output json` prints the API's answer as JSON; exit codes are in dbportal_cli/client.py.

    dbportal login --url http://127.0.0.1:8000 --username alice      # asks for the password
    dbportal request grant --instance dev-pg --team payments --role app --database app \\
        --schema payments --privilege SELECT --justification "reports" --preview
    dbportal wait 42 && dbportal secret 42
    dbportal plan access.yaml && dbportal apply access.yaml --yes
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from dbportal_cli import config
from dbportal_cli.client import (
    FAILURE,
    NOT_SIGNED_IN,
    REQUEST_ENDED_BADLY,
    TIMED_OUT,
    ApiError,
    Client,
)

TERMINAL_OK = {"applied"}
TERMINAL_BAD = {"rejected", "cancelled", "failed"}
REQUEST_TYPES = ("schema", "role", "grant", "revoke", "ddl", "replica")
LONG_POLL_SECONDS = 25


class Context:
    def __init__(self, output: str, url: str | None) -> None:
        self.output = output
        self.url_option = url

    @property
    def json(self) -> bool:
        return self.output == "json"

    def client(self, *, signed_in: bool = True) -> Client:
        settings = config.load()
        url = self.url_option or settings.url
        if not url:
            fail("no portal URL: run `dbportal login --url URL` or set DBPORTAL_URL", NOT_SIGNED_IN)
        if signed_in and not settings.token:
            fail("not signed in: run `dbportal login` or set DBPORTAL_TOKEN", NOT_SIGNED_IN)
        return Client(url, settings.token if signed_in else None)

    def emit(self, data: Any, text: str | list[str] | None = None) -> None:
        if self.json:
            click.echo(json.dumps(data, indent=2, default=str))
        elif text is not None:
            click.echo(text if isinstance(text, str) else "\n".join(text))


def _set_output(click_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        click_ctx.find_object(Context).output = value


def output_option(function):
    """`--output json` after any command too (`dbportal requests --output json`)."""
    return click.option("--output", type=click.Choice(["text", "json"]), default=None, expose_value=False,
                        callback=_set_output, is_eager=False, help="json prints the API's answer as JSON")(function)


def fail(message: str, code: int = FAILURE) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(title), *(len(r[i]) for r in cells)) for i, (_, title) in enumerate(columns)]
    lines = ["  ".join(title.ljust(widths[i]) for i, (_, title) in enumerate(columns)).rstrip()]
    lines += ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def run(ctx: Context, action) -> Any:
    """Run an API call; an API error prints its detail and each named field, and exits by status."""
    try:
        return action()
    except ApiError as exc:
        if ctx.json:
            click.echo(json.dumps({"status": exc.status, "detail": exc.detail, "errors": exc.errors}), err=True)
        else:
            click.echo("\n".join(exc.lines()), err=True)
        sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json prints the API's answer as JSON")
@click.option("--url", envvar="DBPORTAL_URL", help="the portal's base URL (default: the one `login` saved)")
@click.version_option(package_name=None, version="0.1.0", prog_name="dbportal")
@click.pass_context
def cli(click_ctx: click.Context, output: str, url: str | None) -> None:
    """dbportal: request, follow and review PostgreSQL access from a terminal."""
    click_ctx.obj = Context(output, url)


@cli.command()
@click.option("--username", "-u", help="sign in with a username and password (asked for unless --password-stdin)")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--token-stdin", is_flag=True, help="store an existing API token read from standard input")
@output_option
@click.pass_obj
def login(ctx: Context, username: str | None, password_stdin: bool, token_stdin: bool) -> None:
    """Sign in and keep the token in the config folder (mode 0600)."""
    url = ctx.url_option or config.load().url
    if not url:
        url = click.prompt("Portal URL")
    if token_stdin:
        token = sys.stdin.readline().strip()
        if not token:
            fail("token: empty on standard input", 6)
        run(ctx, lambda: Client(url, token).get("access/"))  # proves the token works
    else:
        username = username or click.prompt("Username")
        password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt("Password", hide_input=True)
        answer = run(ctx, lambda: Client(url).post("auth/token/", {"username": username, "password": password}))
        token = answer["token"]
    path = config.save(url, token)
    ctx.emit({"url": url, "config": str(path)}, f"signed in to {url} (token kept in {path})")


@cli.command()
@output_option
@click.pass_obj
def logout(ctx: Context) -> None:
    """Forget the stored token."""
    removed = config.forget()
    ctx.emit({"removed": removed}, "signed out" if removed else "nothing stored")


@cli.command()
@click.option("--environment", help="dev, staging or prod")
@output_option
@click.pass_obj
def instances(ctx: Context, environment: str | None) -> None:
    """The instances you can see."""
    client = ctx.client()
    rows = run(ctx, lambda: _all_pages(client, "instances/", environment=environment))
    ctx.emit(rows, table(rows, [("id", "ID"), ("name", "NAME"), ("environment", "ENV"), ("kind", "KIND"),
                                ("status", "STATUS"), ("server_version", "VERSION")]))


@cli.command()
@click.option("--team", help="one of your teams (name or id)")
@click.option("--instance", help="an instance (name or id)")
@output_option
@click.pass_obj
def access(ctx: Context, team: str | None, instance: str | None) -> None:
    """What your teams hold: schemas, roles and grants."""
    client = ctx.client()
    state = run(ctx, lambda: client.get("access/", team=team, instance=instance))
    ctx.emit(state, [
        "SCHEMAS", table(state["schemas"], [("instance", "INSTANCE"), ("database", "DATABASE"), ("name", "SCHEMA"),
                                            ("owner_role", "OWNER"), ("team", "TEAM")]),
        "", "ROLES", table(state["roles"], [("instance", "INSTANCE"), ("name", "ROLE"), ("login", "LOGIN"),
                                            ("member_of", "MEMBER OF"), ("team", "TEAM")]),
        "", "GRANTS", table(state["grants"], [("instance", "INSTANCE"), ("role", "ROLE"), ("database", "DATABASE"),
                                              ("schema", "SCHEMA"), ("privileges", "PRIVILEGES"),
                                              ("tables", "TABLES"), ("expires_at", "EXPIRES")]),
    ])


@cli.command("requests")
@click.option("--status", type=click.Choice(["submitted", "approved", "rejected", "cancelled", "queued", "running",
                                             "applied", "failed"]))
@click.option("--type", "type_", type=click.Choice([*REQUEST_TYPES, "drop_role", "disable"]))
@click.option("--team")
@click.option("--instance")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@output_option
@click.pass_obj
def requests_(ctx: Context, status: str | None, type_: str | None, team: str | None, instance: str | None,
              limit: int) -> None:
    """Requests you can see, newest first."""
    client = ctx.client()
    rows = run(ctx, lambda: _all_pages(client, "requests/", limit=limit, status=status, type=type_, team=team,
                                       instance=instance))
    ctx.emit(rows, table(rows, [("id", "ID"), ("type", "TYPE"), ("status", "STATUS"), ("risk", "RISK"),
                                ("instance", "INSTANCE"), ("team", "TEAM"), ("requester", "REQUESTER"),
                                ("created_at", "CREATED")]))


def _all_pages(client: Client, path: str, *, limit: int = 10_000, **params: Any) -> list[dict]:
    rows: list[dict] = []
    page = 1
    while len(rows) < limit:
        answer = client.get(path, page=page, **params)
        if isinstance(answer, list):
            return answer[:limit]
        rows.extend(answer.get("results", []))
        if not answer.get("next"):
            break
        page += 1
    return rows[:limit]


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


def _read_document(path: Path) -> Any:
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}", 6)


def _file_request(ctx: Context, kind: str, common: dict[str, Any], payload: dict[str, Any]) -> None:
    body: dict[str, Any] = {}
    if common.get("file_"):
        document = _read_document(common["file_"])
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


# --- audit -------------------------------------------------------------------------------------------

@cli.group()
def audit() -> None:
    """Audit log exports (auditors and platform admins)."""


@audit.command("export")
@click.option("--format", "format_", type=click.Choice(["csv", "jsonl", "pdf"]), default="csv", show_default=True)
@click.option("--since", help="ISO 8601 date or time")
@click.option("--until", help="ISO 8601 date or time")
@click.option("--output-file", "-o", "target", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="where to write the export (- for standard output)")
@output_option
@click.pass_obj
def audit_export(ctx: Context, format_: str, since: str | None, until: str | None, target: Path) -> None:
    """Download an export of the log, with progress."""
    client = ctx.client()
    params = {k: v for k, v in {"format": format_, "since": since, "until": until}.items() if v}
    response = run(ctx, lambda: client.request("GET", "audit/export/", params=params, stream=True, timeout=600))
    written = 0
    handle = sys.stdout.buffer if str(target) == "-" else open(target, "wb")
    show = sys.stderr.isatty() and str(target) != "-"
    try:
        for chunk in response.iter_content(chunk_size=1 << 16):
            handle.write(chunk)
            written += len(chunk)
            if show:
                click.echo(f"\r{written / 2**20:,.1f} MiB", err=True, nl=False)
    finally:
        if handle is not sys.stdout.buffer:
            handle.close()
    if show:
        click.echo("", err=True)
    if str(target) != "-":
        ctx.emit({"file": str(target), "bytes": written, "format": format_}, f"{written:,} bytes to {target}")


# --- access as code ------------------------------------------------------------------------------------

def _desired(path: Path) -> Any:
    document = _read_document(path)
    if not isinstance(document, dict):
        fail(f"{path}: an object with version, instance, team, schemas, roles, grants", 6)
    return document


def _change_lines(changes: list[dict[str, Any]]) -> list[str]:
    lines = []
    for change in changes:
        sign = {"add": "+", "remove": "-", "wait": "~"}.get(change["op"], "=")
        payload = change["payload"]
        what = ", ".join(f"{k}={_cell(v)}" for k, v in payload.items())
        pending = f" (request #{change['pending_request']})" if change.get("pending_request") else ""
        lines.append(f"{sign} {change['type']}: {what}  # {change['reason']}{pending}")
    return lines or ["no changes: the team's access matches the file"]


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option
@click.pass_obj
def plan(ctx: Context, path: Path) -> None:
    """Compare a desired-state file with what the team holds; print the requests apply would file."""
    client = ctx.client()
    answer = run(ctx, lambda: client.post("change-sets/plan/", {"document": _desired(path)}))
    ctx.emit(answer, _change_lines(answer["changes"]))


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--justification", "-j", help="why (default: the file's `justification`, else its name)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@output_option
@click.pass_obj
def apply(ctx: Context, path: Path, justification: str | None, yes: bool) -> None:
    """File the requests of a desired-state file as one change set (reviewers approve it together)."""
    client = ctx.client()
    document = _desired(path)
    preview = run(ctx, lambda: client.post("change-sets/plan/", {"document": document}))
    if not any(change["op"] in ("add", "remove") for change in preview["changes"]):
        ctx.emit({"id": None, "requests": [], "changes": preview["changes"]}, _change_lines(preview["changes"]))
        return
    if not ctx.json:
        click.echo("\n".join(_change_lines(preview["changes"])), err=True)
    if not yes:
        if not sys.stdin.isatty():
            fail("apply: confirm with --yes when not at a terminal", 2)
        click.confirm("file these requests?", abort=True, err=True)
    body = {"document": document, "source": path.name,
            "justification": justification or document.get("justification") or f"access as code: {path.name}"}
    answer = run(ctx, lambda: client.post("change-sets/", body))
    ctx.emit(answer, [f"change set #{answer['id']}: {len(answer['requests'])} request(s) filed"]
             + [f"  #{r['id']} {r['type']} {r['status']}" for r in answer["requests"]])


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(dbportal completion bash)"."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(cli, {}, "dbportal", "_DBPORTAL_COMPLETE")
    click.echo(completer.source())


def main() -> None:
    cli(prog_name="dbportal")


if __name__ == "__main__":
    main()
