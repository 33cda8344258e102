"""Bad input is a 400 naming the field, never a 500: one guard for every page and API operation (#14, item 8).

The outside test found three 500s: JSON nested ~1,000 levels deep (Python's json RecursionError), a
lone surrogate in a request's `type`, a NUL in the entitlements filter and in the request search.
tests/api/test_fuzz.py generates the same kinds of input for every operation of the API document.
"""

from __future__ import annotations

import io
import json
from urllib.parse import urlencode

import pytest
from django.test import Client
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIClient

from portal.api.parsers import JSONParser
from portal.input_guard import MAX_JSON_DEPTH, BadInput, check_json
from tests.fixtures.people import token_for
from tests.portal.permission_matrix import ROWS
from tests.portal.test_permission_matrix import fill, world  # noqa: F401 - the matrix's objects


def nested(depth: int) -> str:
    """JSON text of `depth` nested arrays (built as text: json.dumps itself would recurse)."""
    return "[" * depth + "]" * depth


def request_body(**fields: str) -> str:
    """A request submission's JSON text with some fields given as raw JSON text."""
    parts = {"type": '"schema"', "instance": '"demo"', "team": '"payments"', "justification": '"x"',
             "payload": '{"database": "app", "name": "guarded"}', **fields}
    return "{" + ", ".join(f'"{name}": {value}' for name, value in parts.items()) + "}"


def post_raw(client, path: str, text: str):
    return client.generic("POST", path, text.encode(), content_type="application/json")


def assert_names(response, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [field], body
    assert body["detail"].startswith(f"{field}: ")


# --- deeply nested JSON ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deeply_nested_json_in_a_field_is_a_400_naming_it(people, api_for, depth):
    # given alice, and a request whose payload holds arrays nested `depth` deep
    body = request_body(payload=nested(depth))
    # when she submits it
    response = post_raw(api_for("alice"), "/api/v1/requests/", body)
    # then it is a 400 naming the payload, not a RecursionError's 500
    assert_names(response, "body" if depth > 900 else "payload")


def test_a_deeply_nested_body_is_a_400_even_before_authentication(db, client):
    response = post_raw(client, "/api/v1/requests/", nested(50_000))
    assert_names(response, "body")


def test_nesting_up_to_the_limit_passes_the_guard():
    check_json(json.loads(nested(MAX_JSON_DEPTH)))
    with pytest.raises(BadInput):
        check_json(json.loads(nested(MAX_JSON_DEPTH + 1)))


# --- lone surrogates ---------------------------------------------------------------------------

def test_a_lone_surrogate_in_the_request_type_is_a_400_naming_it(people, api_for):
    # given a request whose type is JSON's escape of a lone surrogate (no UTF-8 encodes it)
    body = request_body(type='"\\ud800"')
    # when alice submits it, then the type is named
    assert_names(post_raw(api_for("alice"), "/api/v1/requests/", body), "type")


def test_a_lone_surrogate_in_a_nested_field_or_a_key_is_a_400_naming_it(people, api_for):
    client = api_for("alice")
    nested_value = request_body(payload='{"database": "app", "name": "x\\udfffy"}')
    assert_names(post_raw(client, "/api/v1/requests/", nested_value), "payload.name")
    in_a_key = request_body(payload='{"database": "app", "na\\ud83dme": "x"}')
    response = post_raw(client, "/api/v1/requests/", in_a_key)
    assert_names(response, "payload.na\\ud83dme")  # echoed as an escape, never as the raw code point


def test_a_paired_surrogate_is_an_ordinary_character(people, api_for):
    # "\ud83d\ude00" is one emoji: not the guard's business (the serializer may refuse the name)
    body = request_body(payload='{"database": "app", "name": "\\ud83d\\ude00"}')
    response = post_raw(api_for("alice"), "/api/v1/requests/", body)
    assert response.status_code < 500
    assert "lone surrogate" not in response.content.decode()


# --- NUL characters ---------------------------------------------------------------------------

def test_a_nul_in_the_entitlements_filter_is_a_400_naming_it(people, api_for):
    response = api_for("carol").get("/api/v1/entitlements/", {"role": "app\x00owner", "instance": "demo"})
    assert_names(response, "role")


def test_a_nul_in_a_json_field_is_a_400_naming_it(people, api_for):
    body = request_body(justification='"because\\u0000"')
    assert_names(post_raw(api_for("alice"), "/api/v1/requests/", body), "justification")


def test_a_nul_in_a_query_parameter_name_is_a_400(people, api_for):
    response = api_for("admin").get("/api/v1/teams/?na%00me=x")
    assert_names(response, "na\\u0000me")


def test_a_nul_in_the_request_search_is_a_400_page_naming_the_parameter(people, web_for):
    # given bob on the request search page, when he searches for a string with a NUL in it
    response = web_for("bob").get("/requests/search/", {"q": "pay\x00ments"})
    # then he gets the 400 page saying which parameter was wrong
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert 'id="bad-input">q: must not contain a NUL character' in response.content.decode()


@pytest.mark.parametrize("query", ["a & b | !c", "x:*", "')) OR 1=1 --", "ab\\:* & (", "<->", "'", "über straße"])
def test_tsquery_syntax_in_the_request_search_is_plain_text(people, web_for, query):
    # the search's words reach to_tsquery only as quoted lexemes: operators typed are text, never a 500
    response = web_for("bob").get("/requests/search/", {"q": query})
    assert response.status_code == 200


def test_a_nul_in_a_form_field_is_a_400_page_naming_the_field(people, web_for):
    response = web_for("admin").post("/teams/", {"name": "nul\x00team", "description": "x"})
    assert response.status_code == 400
    assert "name: must not contain a NUL character" in response.content.decode()


def test_a_nul_in_a_url_parameter_is_a_400_naming_it(people, web_for, api_for):
    page = web_for("alice").get("/requests/new/sch%00ema/")
    assert page.status_code == 400
    assert "request_type: must not contain a NUL character" in page.content.decode()
    assert_names(api_for("alice").get("/api/v1/requests/1%00/"), "pk")


# --- the API's parser is guarded on its own too ------------------------------------------------

@pytest.mark.parametrize(("text", "field"), [(nested(5_000), "body"), ('{"a": "\\u0000"}', "a"),
                                              ('{"a": ["\\ud800"]}', "a.0")])
def test_the_api_json_parser_refuses_what_the_guard_refuses(text, field):
    with pytest.raises(ValidationError) as refused:
        JSONParser().parse(io.BytesIO(text.encode()), "application/json", {})
    assert list(refused.value.detail) == [field]


# --- every page and operation, through the permission matrix's routes ---------------------------

def _nul_probes(row, objects: dict):
    """(field, path, body fields) of a row's request with a NUL in one query parameter or body field."""
    path, data = fill(row.path, objects), fill(row.data, objects)
    separator = "&" if "?" in path else "?"
    yield "probe", f"{path}{separator}probe=a%00b", data
    for name, value in data.items():
        yield name, path, {**data, name: f"{value}\x00"}


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.method} {row.route}" for row in ROWS])
def test_a_nul_anywhere_on_any_page_or_operation_is_a_400_naming_it(row, world, people):  # noqa: F811
    # given the platform admin (the guard answers before any permission check, so any persona would do)
    is_api = row.path.startswith("/api/")
    if is_api:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(people['admin'])}")
    else:
        client = Client()
        client.force_login(people["admin"])
    for field, path, data in _nul_probes(row, world):
        # when a NUL travels in that parameter or field
        if is_api:
            body = json.dumps(data) if row.method != "GET" else ""
            response = client.generic(row.method, path, body, content_type="application/json")
        else:
            response = client.generic(row.method, path, urlencode(data) if row.method != "GET" else "",
                                      content_type="application/x-www-form-urlencoded")
        # then it is a 400 naming it: the API's error shape, or the 400 page
        assert response.status_code == 400, (row.method, path, field, response.status_code)
        if is_api:
            assert list(response.json()["errors"]) == [field]
        else:
            assert f'id="bad-input">{field}: must not contain a NUL character' in response.content.decode()


@pytest.mark.parametrize("value", ["²", "9" * 30, "٣"])
def test_an_id_filter_of_unicode_digits_or_beyond_bigint_is_a_name_not_a_500(people, api_for, value):
    # given digits int() cannot read or PostgreSQL's bigint cannot hold
    for parameter in ("team", "instance"):
        # when they filter the request list, then they are taken as a name that matches nothing
        response = api_for("alice").get("/api/v1/requests/", {parameter: value})
        assert response.status_code == 200, (parameter, response.content)
        assert response.json()["results"] == []
