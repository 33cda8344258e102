"""The API's filter backend: django-filter, skipped when the query string is empty."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend


class FilterBackend(DjangoFilterBackend):
    def filter_queryset(self, request, queryset, view):
        # No parameter, nothing to filter and nothing to refuse: the same queryset django-filter
        # would return, without building a filterset class, its form and the form's deep copies
        # (about a millisecond of CPU on every plain list call).
        if not request.query_params:
            return queryset
        return super().filter_queryset(request, queryset, view)
