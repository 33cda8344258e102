"""Template helpers shared by every page: badges, relative times, highlighted SQL, hashes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JsonLexer, PostgresLexer

register = template.Library()

_RUNNING = {"queued", "running"}
_ENV_LABEL = {"prod": "production", "staging": "staging", "dev": "dev"}


@register.simple_tag
def status_badge(status: str) -> SafeString:
    """One colour per status; queued/running carry a spinner."""
    spinner = (
        mark_safe('<span class="spinner-border spinner-border-sm me-1" aria-hidden="true"></span>')
        if status in _RUNNING else ""
    )
    return format_html('<span class="badge status-badge status-{}" data-status="{}">{}{}</span>',
                       status, status, spinner, status)


@register.simple_tag
def risk_badge(risk: str, reasons: list | None = None) -> SafeString:
    """Risk badge; a high risk names the rule(s) that made it high on hover and in text."""
    reasons = [str(r) for r in (reasons or [])]
    title = "; ".join(reasons) if reasons else f"{risk} risk"
    if risk == "high" and reasons:
        return format_html('<span class="badge risk-badge risk-high" title="{}">high risk</span> '
                           '<span class="small text-danger-emphasis risk-reason">{}</span>', title, reasons[0])
    return format_html('<span class="badge risk-badge risk-{}" title="{}">{} risk</span>', risk, title, risk)


@register.simple_tag
def env_badge(environment: str) -> SafeString:
    """Environment, always spelled out; prod is red and says PRODUCTION (not colour alone)."""
    label = _ENV_LABEL.get(environment, environment)
    if environment == "prod":
        return mark_safe('<span class="badge env-badge env-prod"><i class="bi bi-exclamation-octagon" '
                         'aria-hidden="true"></i> PRODUCTION</span>')
    return format_html('<span class="badge env-badge env-{}">{}</span>', environment, label)


@register.simple_tag
def reltime(value: datetime | None) -> SafeString:
    """'3 min ago' with the absolute UTC time on hover."""
    if not value:
        return mark_safe('<span class="text-muted">—</span>')
    now = timezone.now()
    absolute = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if value > now:
        text = "in " + timesince(now, value, depth=1)
    else:
        delta = (now - value).total_seconds()
        text = "just now" if delta < 60 else timesince(value, now, depth=1) + " ago"
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), absolute, text)


@register.simple_tag
def utc(value: datetime | None) -> str:
    if not value:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.simple_tag
def short_hash(value: str | None, length: int = 12) -> SafeString:
    """A hash shortened, with the full value on hover and for screen readers."""
    if not value:
        return mark_safe('<span class="text-muted">—</span>')
    return format_html('<code class="hash" title="{}" data-full-hash="{}">{}…</code>', value, value, value[:length])


_FORMATTER = HtmlFormatter(nowrap=True)


@register.simple_tag
def sql_lines(plan: list[str] | str | None) -> list[SafeString]:
    """Each statement of a plan highlighted by Pygments, one safe HTML string per line."""
    if not plan:
        return []
    statements = [plan] if isinstance(plan, str) else list(plan)
    text = "\n".join(s if s.rstrip().endswith(";") else s.rstrip() + ";" for s in statements)
    lexer = PostgresLexer()
    # Line by line, so that every line is complete HTML (a token spanning lines would not be).
    return [mark_safe(highlight(line, lexer, _FORMATTER).rstrip("\n"))  # Pygments escapes the text
            for line in text.split("\n")]


@register.filter
def plain_sql(plan: list[str] | str | None) -> str:
    if not plan:
        return ""
    statements = [plan] if isinstance(plan, str) else list(plan)
    return "\n".join(s if s.rstrip().endswith(";") else s.rstrip() + ";" for s in statements)


@register.simple_tag
def duration(start: datetime | None, end: datetime | None) -> str:
    """How long between two instants, in the unit that reads best (ms, s, min)."""
    if not start or not end:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"


@register.filter
def pretty_json(value: Any) -> SafeString:
    """A JSON value indented, keys sorted and highlighted by Pygments (which escapes the text)."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return mark_safe(highlight(text, JsonLexer(), _FORMATTER).rstrip("\n"))


@register.simple_tag
def filter_url(filters: dict[str, str], name: str, value: Any) -> str:
    """A query string: the current filters with `name` set to `value` (the page cursor dropped), so
    a cell of a filtered table narrows the view further."""
    query = {key: text for key, text in filters.items() if text and key != name}
    query[name] = str(value)
    return "?" + urlencode(query)
