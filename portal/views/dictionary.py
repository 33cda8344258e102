"""Data dictionary pages (issue #21): one database's dictionary, and a search across instances.

Every signed-in user; figures scoped per user by portal/selectors/dictionary.py. Exports and the
comment edit are the API's (/api/v1/instances/{id}/dictionary/...), linked from the page.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.selectors.dictionary import (
    dictionary_for,
    dictionary_history,
    dictionary_search,
    index_hints,
    latest_snapshots,
)
from portal.selectors.instances import instance_get_for, instance_list_for

MAX_QUERY = 100


@login_required
@require_GET
def instance_dictionary(request, pk: int):
    instance = instance_get_for(request.user, pk)
    databases = [s.database for s in latest_snapshots(instance)]
    wanted = request.GET.get("database") or (databases[0] if databases else None)
    view = dictionary_for(request.user, instance, wanted) if wanted in databases else None
    return render(request, "instances/dictionary.html", {
        "instance": instance, "databases": databases, "database": wanted if view else None, "view": view,
        "history": dictionary_history(instance, wanted, limit=10) if view else [],
        "hints": index_hints(view) if view else [],
    })


@login_required
@require_GET
def dictionary_search_page(request):
    query = request.GET.get("q", "").strip()
    error = ""
    results: list = []
    if query:
        if not 2 <= len(query) <= MAX_QUERY or "\x00" in query:
            error = f"Search for 2 to {MAX_QUERY} characters."
        else:
            results = dictionary_search(request.user, query, instances=instance_list_for(request.user))
    return render(request, "dictionary/search.html", {"query": query, "results": results, "error": error},
                  status=400 if error else 200)
