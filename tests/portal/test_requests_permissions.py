"""Persona × endpoint matrix for /api/v1/requests/: every endpoint, every persona, one status."""

from __future__ import annotations

import pytest

from portal.api.urls import router
from portal.models import ChangeRequest
from tests.portal.requests_helpers import schema_body

PERSONAS = ["alice", "dave", "bob", "carol", "admin", None]  # None: anonymous

# (url name, method) -> expected status per persona, on a request alice submitted for payments.
# retry acts on a failed request (what it is for); the others on a submitted one.
MATRIX = {
    ("request-list", "get"): {"alice": 200, "dave": 200, "bob": 200, "carol": 200, "admin": 200, None: 401},
    ("request-list", "post"): {"alice": 201, "dave": 400, "bob": 403, "carol": 403, "admin": 201, None: 401},
    ("request-preview", "post"): {"alice": 200, "dave": 400, "bob": 403, "carol": 403, "admin": 200, None: 401},
    ("request-detail", "get"): {"alice": 200, "dave": 404, "bob": 200, "carol": 200, "admin": 200, None: 401},
    ("request-approve", "post"): {"alice": 403, "dave": 404, "bob": 200, "carol": 403, "admin": 200, None: 401},
    ("request-reject", "post"): {"alice": 403, "dave": 404, "bob": 200, "carol": 403, "admin": 200, None: 401},
    ("request-cancel", "post"): {"alice": 200, "dave": 404, "bob": 403, "carol": 403, "admin": 403, None: 401},
    ("request-retry", "post"): {"alice": 403, "dave": 404, "bob": 200, "carol": 403, "admin": 200, None: 401},
    # a schema request has no password: 404 for its requester too; 200 then 410: tests/provisioning/test_apply.py
    ("request-secret", "get"): {"alice": 404, "dave": 404, "bob": 403, "carol": 403, "admin": 403, None: 401},
    # the reviewer's context (#19): reviewers and admins; others who see the request, 403
    ("request-context", "get"): {"alice": 403, "dave": 404, "bob": 200, "carol": 403, "admin": 200, None: 401},
}


def test_every_requests_endpoint_has_a_row_in_the_matrix():
    from django.urls import URLPattern

    names = {p.name for p in router.urls if isinstance(p, URLPattern) and p.name.startswith("request-")}
    assert names == {name for name, _ in MATRIX}
    methods = {}
    for pattern in router.urls:
        if pattern.name in names:
            view = pattern.callback
            methods.setdefault(pattern.name, set()).update(m for m in view.actions if m != "head")
    assert {(name, m) for name, ms in methods.items() for m in ms} == set(MATRIX)


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p or "anonymous")
@pytest.mark.parametrize(("endpoint", "method"), list(MATRIX), ids=lambda x: x if isinstance(x, str) else "")
def test_persona_endpoint_matrix(people, managed_instance, api_for, persona, endpoint, method):
    request_id = api_for("alice").post("/api/v1/requests/", schema_body(), format="json").json()["id"]
    if endpoint == "request-retry":
        ChangeRequest.objects.filter(pk=request_id).update(status="failed")
    paths = {
        "request-list": "/api/v1/requests/",
        "request-preview": "/api/v1/requests/preview/",
    }
    path = paths.get(endpoint) or f"/api/v1/requests/{request_id}/" + (
        "" if endpoint == "request-detail" else endpoint.removeprefix("request-") + "/")
    body = schema_body() if endpoint in ("request-list", "request-preview") else {"comment": "matrix"}
    client = api_for(persona)
    response = getattr(client, method)(path, body, format="json") if method == "post" else client.get(path)
    assert response.status_code == MATRIX[(endpoint, method)][persona], response.json()
    assert set(response.json()) >= ({"detail", "errors"} if response.status_code >= 400 else set())
