"""Log hygiene: passwords and DSN credentials never reach a log line."""

from __future__ import annotations

import logging
import re
from typing import Any

# user:password@ in URLs, password=... in conninfo strings, PASSWORD '...' in SQL.
_PATTERNS = [
    # The lookbehind starts a scheme only where a run of scheme characters starts: without it a
    # long run of letters was tried from every position (quadratic; 2 s for 20,000 letters).
    (re.compile(r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.I), r"\g<scheme>:***@"),
    (re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.I), r"\1***"),
    (re.compile(r"(PASSWORD\s+)('(?:[^']|'')*'|E'(?:[^']|'')*')", re.I), r"\1'***'"),
    (re.compile(r"SCRAM-SHA-256\$[^'\s]+"), "SCRAM-SHA-256$***"),
]
_SENSITIVE_KEYS = {"password", "admin_password", "secret", "token", "dsn", "pwd", "passwd"}


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
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
