"""Page-number pagination that refuses a bad page size instead of silently ignoring it."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from portal.selectors.paging import BoundedCountPaginator, count_bound


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


class BoundedCountPagination(Pagination):
    """Page-number pagination for lists that grow with the portal's history (the request list):
    `count` is exact up to COUNT_BOUND rows and otherwise a lower bound, flagged by `count_exact`.

    A full count reads every row the caller may see (a seq scan of the requests table for a team
    that filed 100k requests: 35-80 ms a page, growing with the table), while the page itself reads
    50 rows by index. The contract (DESIGN.md) is `results` and `next`; `next` stays exact because
    the count always reaches one row past the requested page, so every page stays reachable."""

    COUNT_BOUND = 1000

    def paginate_queryset(self, queryset, request, view=None):
        # "last" (or a page DRF will refuse anyway) counts exactly, as before.
        page = request.query_params.get(self.page_query_param)
        self._count_bound = count_bound(page, self.get_page_size(request), self.COUNT_BOUND)
        return super().paginate_queryset(queryset, request, view)

    def django_paginator_class(self, object_list, per_page) -> BoundedCountPaginator:
        return BoundedCountPaginator(object_list, per_page, bound=self._count_bound)

    def get_paginated_response(self, data) -> Response:
        paginator = self.page.paginator
        return Response(
            {
                "count": paginator.count,
                "count_exact": paginator.count_exact,
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
