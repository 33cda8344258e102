"""The OpenAPI document: every operation lists the error answers it can give, with one shared body.

Every error of the API has the shape {"detail": str, "errors": {field: [messages]}} (see
portal/api/exception_handler.py). PortalAutoSchema adds those answers to each operation from what the view
really does, so the document never lies by omission (schemathesis checks every status it sees
against it):
  400  always: the bad-input guard (portal/input_guard.py) refuses a NUL anywhere, the path too;
       and whatever a body or query parameter may get wrong
  401  the operation needs a logged-in caller
  403  always (persona rules, CSRF on session posts, login lockout)
  404  always (out-of-scope or missing objects, a page past the end)
  429  the view is throttled
Views add the domain answers they can give with `error_responses(409, 410)` in extend_schema.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ERROR_DESCRIPTIONS = {
    400: "Bad input: `errors` names each field and what is wrong with it.",
    401: "No valid credentials (token or session).",
    403: "The caller may not do this (persona rules, CSRF, or too many failed logins).",
    404: "No such object in the caller's scope (objects outside it are 404, never 403).",
    409: "Conflict with the object's current state (e.g. approving a cancelled request).",
    410: "Gone: available once and already used, or expired.",
    415: "The body is not JSON.",
    429: "Too many requests; retry later.",
}


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx answer."""

    detail = serializers.CharField(help_text="One line for a human.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='Messages by field name, dotted for nested fields ("payload.name"); empty when no field is at fault.',
    )

    class Meta:
        ref_name = "Error"


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """`extend_schema(responses={200: X, **error_responses(409, 410)})` for domain answers."""
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]) for code in codes}


class PortalAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for code in self._error_codes(operation):
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]), str(code))
        return operation

    def _error_codes(self, operation: dict) -> list[int]:
        codes = [400, 403, 404]
        if "requestBody" in operation:
            codes.append(415)
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes.append(401)
        if self.view.get_throttles():
            codes.append(429)
        return sorted(codes)
