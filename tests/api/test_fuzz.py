"""API fuzzing: schemathesis against the portal's own OpenAPI document, as every persona.

In-process through the WSGI application (no socket, the test's database transaction). Each
operation of /api/v1/schema/ × each persona gets a bounded number of generated requests, valid
and invalid ones; every response must be a non-5xx that the document describes (status, content
type, body schema). Instance registration is fuzzed with PORTAL_ALLOWED_TARGETS at its loopback
default, so a fuzzed host is refused without any network traffic and only 127.0.0.0/8 is ever
dialled (with the 5 s connect timeout).
"""

from __future__ import annotations

import copy
import json
import secrets
import socket
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer as JSONRenderer
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from audit.models import AuditEvent
from portal.models import Team
from portal.services.requests import request_submit
from tests.fixtures.people import token_for

PERSONAS = [None, "alice", "dave", "bob", "carol", "admin"]
EXAMPLES_PER_OPERATION = 8
# Operations whose valid-looking input may still break a rule no schema can state (a host outside
# PORTAL_ALLOWED_TARGETS, a name already taken, a payload the request type refuses, since after
# until): a 400 there is right, so "schema-valid data must be accepted" is not checked. Every
# other check still is, 5xx and undocumented answers above all.
RULES_BEYOND_THE_SCHEMA = {"POST", "PUT", ("GET", "/api/v1/audit/events/"), ("GET", "/api/v1/audit/export/"),
                           ("GET", "/api/v1/entitlements/"), ("GET", "/api/v1/access/"),
                           # a month that does not exist (2026-13), a search without a term
                           ("GET", "/api/v1/audit/archives/{period}/events/"),
                           ("GET", "/api/v1/audit/archives/{period}/export/"), ("GET", "/api/v1/dictionary/search/"),
                           ("GET", "/api/v1/requests/{id}/")}  # wait= needs status=


def _document() -> dict:
    """The document /api/v1/schema/ serves, as plain JSON data (generated once per session)."""
    return json.loads(JSONRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


DOCUMENT = _document()
OPERATIONS = sorted((path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item)


@pytest.fixture
def wsgi_app():
    """The real WSGI application, kept from closing the test's connection (as Django's test Client does)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def test_the_fuzzed_document_is_the_one_the_api_serves(api_for):
    response = api_for(None).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert json.loads(response.content) == DOCUMENT


@pytest.fixture
def fuzz_world(people, managed_instance):
    """Personas with tokens, the managed instance `demo`, a submitted request of alice's and one of
    dave's: objects for detail and action routes to find (and change) besides the random ids."""
    assert django_settings.ALLOWED_TARGETS == ["127.0.0.0/8", "::1/128", "localhost"]
    tokens = {name: token_for(user) for name, user in people.items()}
    submitted = [
        request_submit(user=people[who], actor_ip=None, type="schema", instance=managed_instance,
                       team=Team.objects.get(name=team), justification="fuzz",
                       payload={"database": "app", "name": f"fuzz_{secrets.token_hex(4)}"})
        for who, team in (("alice", "payments"), ("dave", "analytics"))
    ]
    existing = {
        "/api/v1/requests/": [r.pk for r in submitted],
        "/api/v1/instances/": [managed_instance.pk],
        "/api/v1/teams/": list(Team.objects.values_list("pk", flat=True)),
        "/api/v1/audit/events/": list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)[:3]),
    }
    return {"tokens": tokens, "existing": existing}


def existing_path_parameters(path: str, world: dict) -> list[dict]:
    """Path parameters naming real objects for `path` (e.g. /api/v1/requests/{id}/approve/)."""
    for prefix, ids in world["existing"].items():
        if path.startswith(prefix) and path != prefix and "{" in path:
            name = path[len(prefix):].split("}")[0].lstrip("{")
            return [{name: pk} for pk in ids]
    return []


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_api_answers_every_generated_request_within_its_contract(path, method, fuzz_world, wsgi_app):
    loaded = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    loaded.app = wsgi_app
    operation = loaded[path][method]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        *[operation.as_strategy(mode, path_parameters=parameters)
          for parameters in existing_path_parameters(path, fuzz_world) for mode in GenerationMode],
    )
    excluded = [positive_data_acceptance] if {method, (method, path)} & RULES_BEYOND_THE_SCHEMA else []

    def fuzz_as(persona: str | None) -> None:
        headers = {"Authorization": f"Token {fuzz_world['tokens'][persona]}"} if persona else {}

        @given(case=strategy)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            note(f"persona: {persona or 'anonymous'}")
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        run()

    for persona in PERSONAS:  # one database setup per operation; every persona gets its own run
        fuzz_as(persona)


LOOPBACK = st.sampled_from(["127.0.0.1", "127.3.2.1", "localhost", "::1"])


@given(host=LOOPBACK, port=st.integers(min_value=1, max_value=65535))
@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_registering_any_loopback_port_answers_201_or_a_clear_400(people, api_for, host, port):
    """Loopback is the only place a fuzzed registration may dial; whatever listens there (or not)."""
    body = {"name": "probe", "environment": "dev", "host": host, "port": port, "admin_user": "nobody_here"}
    response = api_for("admin").post("/api/v1/instances/", body, format="json")
    assert response.status_code in (201, 400), response.content
    if response.status_code == 400:
        assert response.json()["errors"], "a refusal names the field"


def test_a_loopback_port_that_accepts_and_never_answers_times_out_into_a_400(people, api_for):
    """The 5 s connect timeout covers a listener that accepts and stays silent: no hung worker."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes the handshake; nobody ever reads or writes
        body = {"name": "silent", "environment": "dev", "host": "127.0.0.1", "port": listener.getsockname()[1],
                "admin_user": "postgres"}
        response = api_for("admin").post("/api/v1/instances/", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"host": ["connection timed out"]}


def test_a_host_outside_the_allowed_targets_is_refused_without_dialling(people, api_for):
    body = {"name": "far", "environment": "dev", "host": "10.1.2.3", "port": 5432, "admin_user": "postgres"}
    response = api_for("admin").post("/api/v1/instances/", body, format="json")
    assert response.status_code == 400
    assert "PORTAL_ALLOWED_TARGETS" in response.json()["errors"]["host"][0]


# Found by the fuzzer: a NUL character in a free-text filter. django-filter refused it with a 400
# that the document did not allow (it said "any string"); the audit filters sent it to PostgreSQL,
# whose text cannot hold it: a 500. Now every such filter refuses it, and the document says so.
NUL_FILTERS = [("/api/v1/requests/", "team"), ("/api/v1/requests/", "instance"), ("/api/v1/drift/", "instance"),
               ("/api/v1/drift/", "role"), ("/api/v1/audit/events/", "actor"), ("/api/v1/audit/events/", "instance"),
               ("/api/v1/audit/export/", "actor"), ("/api/v1/audit/export/", "instance")]


@pytest.mark.parametrize(("path", "name"), NUL_FILTERS, ids=[f"{p} {n}" for p, n in NUL_FILTERS])
def test_a_nul_in_a_text_filter_is_a_documented_400(people, api_for, path, name):
    parameter = next(p for p in DOCUMENT["paths"][path]["get"]["parameters"] if p["name"] == name)
    assert parameter["schema"]["pattern"] == "^[^\\x00]*$"
    response = api_for("admin").get(path, {name: "pay\x00ments"})
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [name]


@pytest.mark.parametrize("url", ["/audit/?actor=a%00b", "/audit/?instance=a%00b", "/drift/?instance=a%00b",
                                 "/requests/?team=a%00b", "/entitlements/?role=a%00b&at=2999-01-01"])
def test_a_nul_in_an_audit_page_filter_is_explained_not_a_500(people, web_for, url):
    response = web_for("admin").get(url)
    assert response.status_code < 500


# --- the bad-input guard (#14) --------------------------------------------------------------------
# Each operation gets schema-generated requests in which one part at a time is replaced by input
# that used to travel into a view and break it there: a NUL in each query parameter, each path
# parameter and each body field (every documented top-level field and every generated leaf), a lone
# surrogate in each body field (a URL cannot carry one: UTF-8 has no encoding for it), and JSON
# nested far past any payload's depth in each body field and as the whole body. Every one must be
# a 400 in the error shape, naming the part at fault.
POISONS = {"nul": '"pay\\u0000ments"', "surrogate": '"\\ud800"', "nested": "[" * 5_000 + "]" * 5_000}
_MARK = "__poisoned_here__"
GUARD_EXAMPLES_PER_OPERATION = 3


def _clean(value):
    """The generated value without NULs or surrogates, so that only the poisoned part is at fault."""
    if isinstance(value, str):
        return "".join(c for c in value if c != "\x00" and not 0xD800 <= ord(c) <= 0xDFFF)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _body_properties(path: str, method: str) -> list[str]:
    """The top-level fields of the operation's documented JSON body."""
    body = DOCUMENT["paths"][path][method.lower()].get("requestBody")
    if not body:
        return []
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return sorted(schema.get("properties", {}))


def _leaves(value, prefix: tuple = ()):
    """Paths to every scalar inside a generated body."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*prefix, index))
    elif prefix:
        yield prefix


def _with_mark(body, where: tuple):
    """A copy of `body` holding the mark at `where` (a new top-level field when absent)."""
    body = copy.deepcopy(body)
    node = body
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = _MARK
    return body


def _poisoned(case, path: str, method: str):
    """(what, url, raw JSON body or None, the field the 400 must name or None for "some field")."""
    parameters = {name: _clean(value) for name, value in (case.path_parameters or {}).items()}
    query = {name: _clean(value) for name, value in (case.query or {}).items()}
    takes_body = "requestBody" in DOCUMENT["paths"][path][method.lower()]
    body = _clean(case.body) if isinstance(case.body, dict) else {}

    def url(path_values: dict, query_values: dict) -> str:
        located = path.format(**{k: quote(str(v), safe="") for k, v in path_values.items()})
        return located + ("?" + urlencode(query_values, doseq=True) if query_values else "")

    def raw(value) -> str | None:
        return json.dumps(value) if takes_body else None

    documented_query = [p["name"] for p in DOCUMENT["paths"][path][method.lower()].get("parameters", [])
                        if p["in"] == "query"]
    for name in documented_query:
        yield f"NUL in query {name}", url(parameters, {**query, name: "pay\x00ments"}), raw(body), name
    yield "NUL in an undocumented parameter", url(parameters, {**query, "extra": "x\x00"}), raw(body), "extra"
    for name in parameters:
        yield f"NUL in path {name}", url({**parameters, name: f"{parameters[name]}\x00"}, query), raw(body), None
    if not takes_body:
        return
    fields = {(name,) for name in _body_properties(path, method)} | set(_leaves(body))
    for where in sorted(fields, key=str):
        marked = json.dumps(_with_mark(body, where))
        for kind, text in POISONS.items():
            dotted = ".".join(str(step) for step in where)
            expected = str(where[0]) if kind == "nested" else dotted
            yield f"{kind} in {dotted}", url(parameters, query), marked.replace(f'"{_MARK}"', text), expected
    yield "nested body", url(parameters, query), POISONS["nested"], "body"


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_poisoned_input_in_any_part_of_any_operation_is_a_400_naming_it(path, method, people, client):
    operation = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))[path][method]
    token = token_for(people["admin"])

    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    @settings(max_examples=GUARD_EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        for what, url, body, field in _poisoned(case, path, method):
            note(f"{what}: {method} {url}")
            response = client.generic(method, url, (body or "").encode(), content_type="application/json",
                                      HTTP_AUTHORIZATION=f"Token {token}")
            assert response.status_code == 400, (what, response.status_code, response.content[:300])
            answer = response.json()
            assert set(answer) == {"detail", "errors"} and answer["errors"], (what, answer)
            if field is not None:
                named = list(answer["errors"])
                # JSON nested past the parser's own recursion limit cannot be traced to its field
                assert named == [field] or (what.startswith("nested") and named == ["body"]), (what, answer)

    run()
