"""The `dbportal` command (Click). Every command talks to the REST API only, with the caller's token;
`--output json` prints the API's answer as JSON; exit codes are in dbportal_cli/client.py.

    dbportal login --url http://127.0.0.1:8000 --username alice      # asks for the password
    dbportal request grant --instance dev-pg --team payments --role app --database app \\
        --schema payments --privilege SELECT --justification "reports" --preview
    dbportal wait 42 && dbportal secret 42
    dbportal plan access.yaml && dbportal apply access.yaml --yes
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dbportal_cli import (
    config,
    filing,  # noqa: F401 - registers request, wait, secret, approve and reject on `cli`
)
from dbportal_cli.base import (
    REQUEST_TYPES,
    Context,
    all_pages,
    cell,
    cli,
    fail,
    output_option,
    read_document,
    run,
    table,
)
from dbportal_cli.client import Client


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
    rows = run(ctx, lambda: all_pages(client, "instances/", environment=environment))
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
    rows = run(ctx, lambda: all_pages(client, "requests/", limit=limit, status=status, type=type_, team=team,
                                       instance=instance))
    ctx.emit(rows, table(rows, [("id", "ID"), ("type", "TYPE"), ("status", "STATUS"), ("risk", "RISK"),
                                ("instance", "INSTANCE"), ("team", "TEAM"), ("requester", "REQUESTER"),
                                ("created_at", "CREATED")]))


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
    document = read_document(path)
    if not isinstance(document, dict):
        fail(f"{path}: an object with version, instance, team, schemas, roles, grants", 6)
    return document


def _change_lines(changes: list[dict[str, Any]]) -> list[str]:
    lines = []
    for change in changes:
        sign = {"add": "+", "remove": "-", "wait": "~"}.get(change["op"], "=")
        payload = change["payload"]
        what = ", ".join(f"{k}={cell(v)}" for k, v in payload.items())
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
