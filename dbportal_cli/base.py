"""The `dbportal` command's shared parts: the Click group every command hangs on, the output
options, the API call wrapper (an API error prints its detail and exits by status) and tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from dbportal_cli import config
from dbportal_cli.client import (
    FAILURE,
    NOT_SIGNED_IN,
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
    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(title), *(len(r[i]) for r in cells)) for i, (_, title) in enumerate(columns)]
    lines = ["  ".join(title.ljust(widths[i]) for i, (_, title) in enumerate(columns)).rstrip()]
    lines += ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def cell(value: Any) -> str:
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


def all_pages(client: Client, path: str, *, limit: int = 10_000, **params: Any) -> list[dict]:
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


def read_document(path: Path) -> Any:
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}", 6)
