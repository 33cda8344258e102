"""The one guard against input no view can handle: a 400 naming the field, never a 500.

PostgreSQL text cannot hold a NUL character, UTF-8 cannot hold a lone surrogate (JSON's "\\ud800"
escape makes one), and Python's json parser gives up with a RecursionError around a thousand
levels of nesting. Each of these used to travel until something deep inside a view broke on it.
InputGuardMiddleware looks once, before any view runs, at the path, every query parameter, every
form field and every JSON body, and answers 400 in the API's error shape under /api/ (a 400 page
elsewhere); the API's JSON parser uses the same functions, so no body reaches a serializer
unchecked even where the middleware did not run.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import HttpRequest, QueryDict
from django.urls import Resolver404, resolve

# Deeper than any payload the portal defines (a request's payload is three levels at most), far
# below the depth at which the json module's recursion would fail.
MAX_JSON_DEPTH = 32
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
JSON_MEDIA_TYPES = ("application/json",)


class BadInput(Exception):
    """Input refused at the edge: `field` is the dotted name at fault ("payload.name", "team")."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    @property
    def errors(self) -> dict[str, list[str]]:
        return {self.field: [self.message]}


def shown(name: str) -> str:
    """`name` fit to echo in a message: NULs and lone surrogates written as escapes."""
    return _BAD_CHARACTER.sub(lambda m: f"\\u{ord(m.group()):04x}", name)


def text_problem(value: str) -> str | None:
    """What makes `value` unusable as text, or None."""
    match = _BAD_CHARACTER.search(value)
    if match is None:
        return None
    if match.group() == "\x00":
        return "must not contain a NUL character"
    return "must not contain a lone surrogate (not valid Unicode text)"


def check_json(data: Any) -> None:
    """Walk parsed JSON without recursion; refuse deep nesting and bad text in keys and values."""

    def dotted(steps: tuple[str, ...]) -> str:
        return ".".join(steps) if steps else "body"  # the body itself is at fault

    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, steps = stack.pop()
        if isinstance(value, dict | list):
            if len(steps) >= MAX_JSON_DEPTH:
                # Named by the top-level field: the full path of a deep nest says nothing more.
                raise BadInput(dotted(steps[:1]), f"nested deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                inner = (*steps, shown(str(key)))
                if isinstance(key, str) and (problem := text_problem(key)):
                    raise BadInput(dotted(inner), f"field name {problem}")
                stack.append((item, inner))
        elif isinstance(value, str) and (problem := text_problem(value)):
            raise BadInput(dotted(steps), problem)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # NaN and Infinity, as DRF's strict parser


def parse_json(raw: bytes | str) -> Any:
    """Parse a JSON body and check it; BadInput for what the guard refuses, ValueError for bad JSON."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadInput("body", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json(data)
    return data


def _check_fields(fields: QueryDict, kind: str) -> None:
    for name, values in fields.lists():
        if problem := text_problem(name):
            raise BadInput(shown(name), f"{kind} name {problem}")
        for value in values:
            if isinstance(value, str) and (problem := text_problem(value)):
                raise BadInput(shown(name), problem)


def _path_field(request: HttpRequest) -> str:
    """The URL parameter holding the bad character ("request_type"), or "path"."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return "path"
    for name, value in match.kwargs.items():
        if isinstance(value, str) and text_problem(value):
            return name
    return "path"


def check_request(request: HttpRequest) -> None:
    """Refuse (BadInput) a request whose path, query, form fields or JSON body the portal cannot use."""
    if problem := text_problem(request.path_info):
        raise BadInput(_path_field(request), problem)
    _check_fields(request.GET, "parameter")
    content_type = request.content_type or ""
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        _check_fields(request.POST, "field")
    elif content_type in JSON_MEDIA_TYPES or content_type.endswith("+json"):
        if request.body:
            try:
                parse_json(request.body)
            except ValueError:
                pass  # not JSON at all: the API's parser answers that with its own 400
