"""The API's JSON parser: DRF's, through the bad-input guard (portal/input_guard.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from portal.input_guard import BadInput, parse_json


class JSONParser(parsers.JSONParser):
    """Refuses, as a 400 naming the field, a NUL, a lone surrogate or nesting past the guard's depth."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return parse_json(stream.read().decode(encoding))
        except BadInput as exc:
            raise ValidationError(exc.errors) from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
