"""Page-number pagination that refuses a bad page size instead of silently ignoring it."""

from django.core.paginator import Paginator
from django.utils.functional import cached_property
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request) -> int:
        # DRF falls back to the default on "abc" or 0; the API answers 400 naming the parameter
        # (found by the API fuzzer: schema-violating page sizes were accepted).
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"must be an integer from 1 to {self.max_page_size}"]})
        return size

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters


class BoundedCountPaginator(Paginator):
    """A paginator whose count stops at `bound` rows: `COUNT(*)` over a `LIMIT bound` subquery.

    `None` counts every row (Django's own behaviour)."""

    def __init__(self, object_list, per_page, *, bound: int | None) -> None:
        super().__init__(object_list, per_page)
        self.bound = bound

    @cached_property
    def count(self) -> int:
        if self.bound is None:
            return super().count
        # Only the primary key in the subquery: the list's annotations (scalar subqueries for names)
        # would otherwise be evaluated for every counted row.
        return self.object_list.values("pk")[: self.bound].count()


class BoundedCountPagination(Pagination):
    """Page-number pagination for lists that grow with the portal's history (the request list):
    `count` is exact up to COUNT_BOUND rows and otherwise a lower bound, flagged by `count_exact`.

    A full count reads every row the caller may see (a seq scan of the requests table for a team
    that filed 100k requests: 35-80 ms a page, growing with the table), while the page itself reads
    50 rows by index. The contract (DESIGN.md) is `results` and `next`; `next` stays exact because
    the count always reaches one row past the requested page, so every page stays reachable."""

    COUNT_BOUND = 1000

    def paginate_queryset(self, queryset, request, view=None):
        page_size = self.get_page_size(request)
        raw = request.query_params.get(self.page_query_param) or "1"
        # "last" (or a page DRF will refuse anyway) needs the exact count, as before.
        number = int(raw) if raw.isdecimal() else None
        self._count_bound = None if number is None else max(self.COUNT_BOUND, number * page_size) + 1
        return super().paginate_queryset(queryset, request, view)

    def django_paginator_class(self, object_list, per_page) -> BoundedCountPaginator:
        return BoundedCountPaginator(object_list, per_page, bound=self._count_bound)

    def get_paginated_response(self, data) -> Response:
        paginator = self.page.paginator
        exact = paginator.bound is None or paginator.count < paginator.bound
        return Response(
            {
                "count": paginator.count,
                "count_exact": exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        answer = super().get_paginated_response_schema(schema)
        answer["properties"]["count"]["description"] = (
            f"rows the caller may see: exact up to {self.COUNT_BOUND} (or to the requested page), "
            "otherwise a lower bound (see count_exact)"
        )
        answer["properties"]["count_exact"] = {"type": "boolean", "description": "whether count is the full number"}
        answer["required"] = [*answer["required"], "count_exact"]
        return answer
