"""The one naming rule of roles and schemas: the API, the forms, the plans and the DDL review
rules all judge names with `name_problem` (pure: no Django, no database)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

# The one naming rule of roles and schemas (API, forms, plans and DDL review all call name_problem).
# An allow-list of ASCII: a letter from another script that looks like a Latin one ("о" is Cyrillic)
# would make a second role that reads like an existing one, so non-ASCII letters are refused rather
# than NFC-normalised and judged by script. Always used with fullmatch(): "$" would also match
# before a trailing newline, and "name\n" would pass as a different role that prints like "name".
NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
MAX_NAME_BYTES = 63
# Every keyword PostgreSQL's quote_ident() would quote: only unreserved keywords may be bare names.
QUOTED_KEYWORDS = frozenset(RESERVED_KEYWORDS) | frozenset(COL_NAME_KEYWORDS) | frozenset(TYPE_FUNC_NAME_KEYWORDS)
# Role names PostgreSQL reserves or treats specially in GRANT / ALTER ROLE.
# dbportal_replication: the portal's own replication role (provisioning.replicas.local), never requestable.
RESERVED_ROLE_NAMES = frozenset({"public", "none", "current_user", "current_role", "session_user",
                                 "dbportal_replication"})
NAME_RULE = ("1 to 63 characters: lower case letters a to z, digits and underscores, not starting with a digit, "
             "not starting with pg_, and not an SQL keyword")

# unicodedata has no names for control characters.
_CONTROL_NAMES = {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "TAB", "\x00": "NUL"}
_ALLOWED_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _character(char: str) -> str:
    """A character named so a person can see it, even when it is invisible (U+200B ZERO WIDTH SPACE)."""
    return f"U+{ord(char):04X} {unicodedata.name(char, _CONTROL_NAMES.get(char, 'control character'))}"


def _character_problem(value: str) -> str:
    """What is wrong, in plain words, with a name the allow-list refused."""
    for position, char in enumerate(value, start=1):
        if char in _ALLOWED_CHARACTERS:
            continue
        category = unicodedata.category(char)
        if category == "Cs":  # half of a UTF-16 pair: not text at all, and PostgreSQL cannot store it
            return f"character {position} is not valid text (U+{ord(char):04X}, half of a surrogate pair)"
        if category[0] in "CZ":  # control, format (zero-width, bidi), separators, spaces, line breaks
            return (f"character {position} is invisible or a space ({_character(char)}); "
                    f"names may not contain spaces, line breaks or invisible characters")
        if not char.isascii() and char.isalnum():
            return (f"character {position} is not one of the letters a to z ({_character(char)}); "
                    f"accented letters and letters of other alphabets are refused because they can look "
                    f"like a to z")
        if char.isalpha():  # A-Z
            return f"character {position} ({char!r}) is upper case; use lower case letters"
        return f"character {position} ({char!r}) is not allowed; use letters a to z, digits and underscores"
    if value[0].isdigit():
        return "must not start with a digit"
    return f"is not a valid name ({NAME_RULE})"


def name_problem(value: Any, *, role: bool = False) -> str | None:
    """Why `value` breaks the naming rule, or None if it is a good PostgreSQL name.

    The one validator of role and schema names: the API, the forms (through the same services),
    the plans and the DDL review rules all call it. Messages are plain words, never the pattern.
    """
    if not isinstance(value, str) or not value:
        return "required: a name"
    if not NAME_RE.fullmatch(value):  # first: it also rejects what UTF-8 cannot encode (lone surrogates)
        return _character_problem(value)
    if len(value.encode()) > MAX_NAME_BYTES:
        return f"at most {MAX_NAME_BYTES} characters (PostgreSQL would cut a longer name short)"
    if value.startswith("pg_"):
        return "the pg_ prefix is reserved by PostgreSQL"
    if value in QUOTED_KEYWORDS:
        return f"{value!r} is an SQL keyword that would need quoting"
    if role and value in RESERVED_ROLE_NAMES:
        return f"{value!r} is a reserved role name"
    return None


