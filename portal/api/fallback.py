"""Unmatched URLs under /api/ answer the API's JSON 404, not the HTML page of the UI."""

from rest_framework.decorators import api_view, authentication_classes, permission_classes, schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@authentication_classes([])
@permission_classes([AllowAny])
@schema(None)  # not an operation of the API: kept out of the OpenAPI document
def api_not_found(request, *args, **kwargs):
    raise NotFound("no such API endpoint")
