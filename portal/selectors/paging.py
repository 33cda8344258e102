"""Counts for lists that grow with the portal's history: exact up to a bound, a lower bound past it.

A full COUNT reads every row the caller may see (every request of a team, every pending request)
while a page reads a few dozen by index; counting up to a bound keeps a page's cost flat (#23)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.functional import cached_property


def count_bound(page: str | None, per_page: int, at_least: int) -> int | None:
    """How many rows to count for a page: one past the larger of `at_least` and the page's end, so
    the page and whether a next one exists come out exact; None (count all) when the page is not a
    number ("last", or one the paginator refuses anyway)."""
    raw = page or "1"
    if not raw.isdecimal():
        return None
    # A page past any table's end still gets a LIMIT PostgreSQL takes (bigint): the paginator then
    # answers it as out of range, never a 500.
    return min(max(at_least, int(raw) * per_page) + 1, _MAX_LIMIT)


_MAX_LIMIT = 2**63 - 1


class BoundedCountPaginator(Paginator):
    """A paginator whose count stops at `bound` rows: `COUNT(*)` over a `LIMIT bound` subquery of
    primary keys. `None` counts every row (Django's own behaviour)."""

    def __init__(self, object_list, per_page, *, bound: int | None) -> None:
        super().__init__(object_list, per_page)
        self.bound = bound

    @cached_property
    def count(self) -> int:
        if self.bound is None:
            return super().count
        # Only the primary key in the subquery: a list's annotations (scalar subqueries for names)
        # would otherwise be evaluated for every counted row. No ORDER BY: any `bound` rows do, and
        # a sort would read every row before the LIMIT (the queue's count planned a top-N sort of
        # all 1,000 pending requests under its LIMIT 101).
        return self.object_list.values("pk").order_by()[: self.bound].count()

    @property
    def count_exact(self) -> bool:
        return self.bound is None or self.count < self.bound
