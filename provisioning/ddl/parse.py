"""Parse the SQL of a DDL request with PostgreSQL's own parser (pglast) into checked statements.

A statement's text in the plan is never the requester's text: it is pglast's deparse of the
parse tree that the scope checks and the rules looked at, and `parse` proves the deparse
round-trips (re-parsing it gives the same tree, as exactly one statement). What runs is
therefore exactly what was checked: comments, odd quoting or a second statement smuggled in a
string cannot survive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pglast
from pglast import ast
from pglast.parser import ParseError
from pglast.stream import RawStream

from portal.errors import InvalidPayload

FIELD = "payload.sql"
MAX_SQL_CHARS = 100_000
MAX_STATEMENTS = 100
# PostgreSQL silently truncates longer identifiers; the portal rejects them instead.
MAX_IDENTIFIER_BYTES = 63
EXCERPT_CHARS = 80


@dataclass(frozen=True)
class Statement:
    """One parsed statement of a request, in the order given."""

    index: int  # 1-based, as shown to people
    node: ast.Node
    source: str  # the requester's text of this statement (for excerpts only, never executed)
    text: str  # pglast's normalised deparse: what the plan runs

    @property
    def kind(self) -> str:
        return type(self.node).__name__

    @property
    def excerpt(self) -> str:
        flat = " ".join(self.source.split())
        return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"

    def label(self) -> str:
        return f"statement {self.index} ({self.excerpt})"


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character index."""
    index = max(0, min(index, len(text)))
    before = text[:index]
    line = before.count("\n") + 1
    col = index - (before.rfind("\n") + 1) + 1
    return line, col


def _syntax_error(text: str, message: str, index: int) -> InvalidPayload:
    line, col = line_col(text, index)
    return InvalidPayload.field(FIELD, f"{message} (position {index + 1} / line {line} col {col})")


def _check_identifier_lengths(text: str) -> None:
    try:
        tokens = pglast.parser.scan(text)
    except ParseError as exc:  # unterminated quoted identifier or string
        message, index = (exc.args + (0,))[:2] if len(exc.args) >= 2 else (str(exc), 0)
        raise _syntax_error(text, str(message), int(index)) from None
    for token in tokens:
        if token.name != "IDENT":
            continue
        raw = text[token.start : token.end + 1]
        name = raw[1:-1].replace('""', '"') if raw.startswith('"') else raw
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            line, col = line_col(text, token.start)
            raise InvalidPayload.field(
                FIELD,
                f"identifier {name[:20]}… is longer than {MAX_IDENTIFIER_BYTES} bytes "
                f"(line {line} col {col}); PostgreSQL would truncate it, the portal refuses it",
            )


def deparse(node: ast.Node) -> str:
    return RawStream()(node)


def parse(text: object) -> list[Statement]:
    """The statements of `text`; InvalidPayload keyed payload.sql for anything unparseable."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidPayload.field(FIELD, "enter at least one SQL statement")
    if len(text) > MAX_SQL_CHARS:
        raise InvalidPayload.field(FIELD, f"at most {MAX_SQL_CHARS} characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidPayload.field(FIELD, "the SQL contains an unpaired surrogate (not valid Unicode text)") from None
    if "\x00" in text:
        # The C parser stops at a NUL byte: whatever follows would be silently ignored.
        raise InvalidPayload.field(FIELD, "the SQL contains a NUL character")
    try:
        raw_statements = pglast.parse_sql(text)
    except ParseError as exc:
        message = str(exc.args[0]) if exc.args else "syntax error"
        index = int(exc.args[1]) if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        raise _syntax_error(text, message, index) from None
    except (RecursionError, ValueError, MemoryError) as exc:
        raise InvalidPayload.field(FIELD, f"the SQL could not be parsed ({type(exc).__name__})") from None
    _check_identifier_lengths(text)
    if not raw_statements:
        raise InvalidPayload.field(FIELD, "enter at least one SQL statement (only comments found)")
    if len(raw_statements) > MAX_STATEMENTS:
        raise InvalidPayload.field(FIELD, f"at most {MAX_STATEMENTS} statements per request")
    statements = []
    for position, raw in enumerate(raw_statements, start=1):
        start = raw.stmt_location or 0
        source = text[start : start + raw.stmt_len] if raw.stmt_len else text[start:]
        statements.append(Statement(index=position, node=raw.stmt, source=source.strip(), text=""))
    return statements


def normalise(statement: Statement) -> Statement:
    """The statement with its deparsed text, after proving the deparse round-trips.

    Called after the scope checks (the deparser is only ever asked about allowed node kinds).
    """
    try:
        text = deparse(statement.node)
        again = pglast.parse_sql(text)
    except (ParseError, NotImplementedError, RecursionError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise InvalidPayload.field(
            FIELD, f"{statement.label()}: this statement cannot be normalised safely ({type(exc).__name__})"
        ) from None
    if len(again) != 1 or again[0].stmt != statement.node:
        raise InvalidPayload.field(
            FIELD, f"{statement.label()}: this statement does not survive normalisation unchanged; rewrite it"
        )
    return Statement(index=statement.index, node=statement.node, source=statement.source, text=text)


def walk(node) -> Iterator[ast.Node]:
    """Every node of a parse tree, iteratively (deep expressions never hit Python's recursion limit)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Node):
            yield current
            for attr in type(current).__slots__:
                value = getattr(current, attr, None)
                if isinstance(value, ast.Node | tuple | list):
                    stack.append(value)
        elif isinstance(current, tuple | list):
            stack.extend(current)
