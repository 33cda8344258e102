"""Log hygiene: passwords and DSN credentials never reach a log line."""

from __future__ import annotations

import logging
import re
from typing import Any

# user:password@ in URLs, password=... in conninfo strings, PASSWORD '...' in SQL. Each pattern
# comes with the text it cannot match without (its trigger): most text holds none of them, and a
# substring test is far cheaper than the scan (a 1 KB detail took 110 µs through the four scans).
_PATTERNS = [
    # The lookbehind starts a scheme only where a run of scheme characters starts: without it a
    # long run of letters was tried from every position (quadratic; 2 s for 20,000 letters).
    ("://", re.compile(r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.I),
     r"\g<scheme>:***@"),
    ("password", re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.I), r"\1***"),
    ("password", re.compile(r"(PASSWORD\s+)('(?:[^']|'')*'|E'(?:[^']|'')*')", re.I), r"\1'***'"),
    ("SCRAM-SHA-256$", re.compile(r"SCRAM-SHA-256\$[^'\s]+"), "SCRAM-SHA-256$***"),
]
_SENSITIVE_KEYS = {"password", "admin_password", "secret", "token", "dsn", "pwd", "passwd"}


def _folded(text: str) -> str:
    """The text as re.IGNORECASE compares the letters of "password": lower case, and the long s
    (U+017F), which re.I takes for an s and str.lower() keeps, as an s. (No other character matches
    one of those letters under re.I; tests/portal/test_redaction.py checks every code point.)"""
    return text.lower().replace("\u017f", "s")


def redact_text(text: str) -> str:
    for trigger, pattern, replacement in _PATTERNS:
        # the trigger is looked for in the text as it is now: an earlier pattern may have changed it
        if trigger in (_folded(text) if trigger == "password" else text):
            text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in _SENSITIVE_KEYS and value:
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: dict) -> dict:
    """structlog processor."""
    return {k: _redact_value(k, v) for k, v in event_dict.items()}


class RedactFilter(logging.Filter):
    """stdlib filter for records from libraries (Django, Celery, psycopg)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is still logged, redacted
                message = str(record.msg)
            record.msg = redact_text(message)
            record.args = ()
        elif isinstance(record.msg, dict):
            record.msg = {k: _redact_value(str(k), v) for k, v in record.msg.items()}
        return True
