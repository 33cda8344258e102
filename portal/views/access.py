"""My access: roles and privileges the user's teams hold, per instance, with a "request removal" action."""

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from portal.selectors.access import access_overview


@login_required
@require_GET
def my_access_view(request):
    overview = access_overview(request.user)
    for grant in overview["grants"]:
        params = {"instance": grant.instance_id, "team": grant.team_id, "role": grant.role,
                  "database": grant.database, "schema": grant.schema,
                  "tables_mode": "all" if grant.tables == "all" else "list",
                  "default_privileges": "on" if grant.default_privileges else "",
                  "justification": f"Remove access granted by request #{grant.request_id}" if grant.request_id
                  else "Remove access no longer needed"}
        query = urlencode({k: v for k, v in params.items() if v not in ("", None)})
        query += "".join("&" + urlencode({"privileges": p}) for p in grant.privileges)
        if isinstance(grant.tables, list):
            query += "".join("&" + urlencode({"tables": t}) for t in grant.tables)
        grant.removal_url = reverse("request-new-form", args=["revoke"]) + "?" + query
    return render(request, "access/mine.html", overview)
