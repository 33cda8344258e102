"""Redaction of log lines and audit details: the trigger substrings skip the scans only where the
scans could not have matched, so the result is exactly that of running every pattern."""

from __future__ import annotations

import re
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from portal.logging import _PATTERNS, _folded, redact_text


def every_scan(text: str) -> str:
    """Every pattern over the whole text, no trigger: what redact_text must equal."""
    for _, pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


CASES = [
    ("could not connect to postgresql://app:s3cret@127.0.0.1/app", "postgresql://app:***@127.0.0.1/app"),
    ("host=db password=s3cret user=app", "password=***"),
    ("host=db PASSWORD = 's3 cret' user=app", "PASSWORD = ***"),
    ("ALTER ROLE x PASSWORD 'it''s'", "PASSWORD '***'"),
    ("CREATE ROLE x PASSWORD E'a\\'b'", "PASSWORD '***'"),
    ("rolpassword SCRAM-SHA-256$4096:abc=$def", "SCRAM-SHA-256$***"),
    # re.IGNORECASE takes the long s (U+017F) for an s: the trigger must too
    ("ALTER ROLE x PA\u017f\u017fWORD 's3cret'", "PA\u017f\u017fWORD '***'"),
    ("pa\u017fsword=s3cret", "pa\u017fsword=***"),
]


def test_each_secret_is_redacted_exactly_as_every_scan_does():
    for text, expected in CASES:
        redacted = redact_text(text)
        assert expected in redacted and "s3cret" not in redacted and "s3 cret" not in redacted, (text, redacted)
        assert redacted == every_scan(text)


def test_text_without_a_trigger_comes_back_unchanged():
    text = "padding " * 138 + "SELECT 1; GRANT USAGE ON SCHEMA ledger TO app"
    assert redact_text(text) is text


def test_no_code_point_matches_a_trigger_letter_under_ignorecase_without_folding_to_it():
    # Every character re.IGNORECASE matches to a letter of "password", ":" or "/" must fold to that
    # letter in _folded (or be it): otherwise a trigger test could miss text the pattern matches.
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    for letter in "pasword":
        matched = re.findall(re.escape(letter), everything, re.I)
        assert matched and all(_folded(c) == letter for c in matched), (letter, [hex(ord(c)) for c in matched])
    for sign in ":/$-":
        assert re.findall(re.escape(sign), everything, re.I) == [sign]


_PIECES = st.sampled_from(["password", "PASSWORD", "Pa\u017fsword", "=", " ", "'", "''", "E'", "://", "postgresql",
                           "app:", "x@", "@", "SCRAM-SHA-256$", "scram-sha-256$", "s3cret", "\u0130", "\u212a", "\n"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=14).map("".join))
def test_redaction_equals_every_scan_on_any_text(text):
    assert redact_text(text) == every_scan(text)
