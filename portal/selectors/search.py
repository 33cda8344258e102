"""The top bar's search: requests by id (#12 or 12), role or schema name, within what the user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, F, Func
from django.db.models.expressions import RawSQL

from portal.models.request import SEARCH_TEXT
from portal.selectors.requests import request_list_for

LIMIT = 50


class _WordsStartLike(Func):
    """search_vector @@ (every word of the query as a prefix: ledger_sug → 'ledger':* & 'sug':*).

    PostgreSQL's own parser splits the query, so the query and the column split words alike; the
    GIN index on search_vector (models/request.py) then selects the candidates instead of a
    read of every request's payload."""

    template = "%(expressions)s"
    arg_joiner = " @@ "
    output_field = BooleanField()

    def __init__(self, term: str) -> None:
        words = RawSQL("(SELECT to_tsquery('simple', string_agg(quote_literal(lexeme) || ':*', ' & '))"
                       " FROM unnest(to_tsvector('simple', %s)))", (term,))
        super().__init__(F("search_vector"), words)


def request_search(user: Any, query: str) -> list:
    """Requests whose id is the query, or whose names (name, role, schema, owner role, member of)
    contain it with each of its words starting a word there (ledger_sug finds ledger_suggest, not
    edger), newest first (at most LIMIT)."""
    query = query.strip()
    if not query:
        return []
    requests = request_list_for(user)
    number = query.lstrip("#")
    if number.isdigit():
        return list(requests.filter(pk=int(number))[:1])
    term = query.lower()
    # The query as typed, inside one of the names ...
    matches = requests.alias(search_text=SEARCH_TEXT).filter(search_text__contains=term)
    if any(character.isalnum() for character in term):
        # ... its words at the start of words there: the index's part, so a search reads the
        # requests that can match, not all of them. (Without a word, e.g. "_", no index helps.)
        matches = matches.filter(_WordsStartLike(term))
    return list(matches.order_by("-id")[:LIMIT])
