"""One exception handler: every error becomes {"detail", "errors"} with a 4xx status."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.errors import DomainError


def _flatten(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF nests errors for nested serializers; the contract wants {"field.sub": [..]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors" and prefix:
                name = prefix
            flat.update(_flatten(value, name))
    elif isinstance(errors, list):
        if all(not isinstance(e, dict | list) for e in errors):
            flat[prefix or "non_field_errors"] = [str(e) for e in errors]
        else:
            for index, value in enumerate(errors):
                flat.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        flat[prefix or "non_field_errors"] = [str(errors)]
    return flat


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return Response({"detail": exc.detail, "errors": exc.errors}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = next(iter(errors.items()), ("", [""]))
        detail = f"{first[0]}: {first[1][0]}" if first[0] not in ("non_field_errors", "") else first[1][0]
        response.data = {"detail": detail or "invalid input", "errors": errors}
        response.status_code = status.HTTP_400_BAD_REQUEST
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else str(response.data)
        response.data = {"detail": str(detail), "errors": {}}
    return response
