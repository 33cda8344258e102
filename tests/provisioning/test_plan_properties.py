"""Property tests of the plans: no string, however hostile, changes what a plan does.

The oracle is structural. A plan rendered for a benign placeholder name is parsed with
PostgreSQL's own parser (pglast); the same plan rendered for an arbitrary string must parse to
exactly that tree with the placeholder replaced by the string, in exactly the places it was.
An extra statement, a changed clause or a name that came out different (injection, truncation,
case folding) breaks the equality. DO blocks are opened up: their PL/pgSQL body is parsed too,
and each statement and condition inside it.

Two levels:
- render(): for any string in any identifier or literal slot, render either refuses it
  (ValueError / psycopg.DataError) or the plan has the template's exact structure. This holds
  even for names the validator would refuse: safety never rests on validation alone.
- validate() then render(): for any string, the validator raises InvalidPayload (→ 400), or the
  validated payload renders to the template's structure naming exactly that string.
And the validators, fed arbitrary JSON-ish payloads, never raise anything but InvalidPayload.
"""

from __future__ import annotations

import copy
from typing import Any

import pglast
import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pglast.keywords import RESERVED_KEYWORDS, UNRESERVED_KEYWORDS

from portal.errors import InvalidPayload
from provisioning.plans import module_for, plan_text
from provisioning.plans.checks import NAME_RE, name_problem, storable
from provisioning.plans.context import InstanceFacts, ManagedRoleFact, ManagedSchemaFact, PlanContext

PLACEHOLDER = "zzslot"

# Strings built to attack quoting: quotes, dollar quotes, comments, statement ends, escapes.
HOSTILE_ALPHABET = "\"'$;-/*\\ \n\tabcXYZ_0é()"
IDENTIFIERS = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=70),
    st.text(alphabet=HOSTILE_ALPHABET, min_size=1, max_size=40),
    st.from_regex(NAME_RE, fullmatch=True).filter(lambda s: len(s) <= 70),
    st.sampled_from(sorted(RESERVED_KEYWORDS | UNRESERVED_KEYWORDS)),
    st.sampled_from(['a"b', 'x"; DROP TABLE t; --', "a$$b", "$$", "x$$; DROP ROLE y; --", "pg_x", "PUBLIC",
                     "public", "current_user", "a" * 63, "a" * 64, "é" * 32, "\\", "'", '"']),
)
# Validator-level: the NUL byte included (PostgreSQL text cannot hold it; it must be a 400).
ANY_STRING = st.one_of(IDENTIFIERS, st.text(max_size=70))

FAST = settings(max_examples=150, deadline=None)
WITH_WORLD = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- the structural oracle --------------------------------------------------------------------

def _strip(tree: Any) -> Any:
    """Positions and line numbers move when a name is longer: they are not structure."""
    if isinstance(tree, dict):
        return {k: _strip(v) for k, v in tree.items()
                if not (k.endswith("location") or k in ("stmt_len", "lineno"))}
    if isinstance(tree, list | tuple):
        return [_strip(v) for v in tree]
    return tree


def _plpgsql(body: str) -> Any:
    """The PL/pgSQL tree of a DO body, with every embedded SQL text parsed as well."""
    tag = "$dbportal_oracle$"
    assert tag not in body
    tree = pglast.parse_plpgsql(f"CREATE FUNCTION oracle() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}")

    def expand(node: Any) -> Any:
        if isinstance(node, dict):
            if "PLpgSQL_expr" in node:
                expr = node["PLpgSQL_expr"]
                # parseMode 0: a statement; otherwise an expression (IF conditions).
                text = expr["query"] if expr.get("parseMode") == 0 else f"SELECT {expr['query']}"
                return {"PLpgSQL_expr": [statement_tree(text)]}
            return {k: expand(v) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v) for v in node]
        return node

    return expand(tree)


def statement_tree(text: str) -> list[Any]:
    """Every statement of `text` as plain data; DO bodies opened up."""
    trees = []
    for raw in pglast.parse_sql(text):
        tree = raw.stmt(skip_none=True)
        if tree["@"] == "DoStmt":
            (body,) = [arg["arg"]["sval"] for arg in tree["args"] if arg["defname"] == "as"]
            tree = {"@": "DoStmt", "plpgsql": _plpgsql(body)}
        trees.append(_strip(tree))
    return trees


def plan_tree(plan: list[str]) -> list[Any]:
    # One plan step is one statement: a step that parses to two would be an injection.
    trees = []
    for text in plan:
        parsed = statement_tree(text)
        assert len(parsed) == 1, f"one step parsed to {len(parsed)} statements: {text!r}"
        trees.extend(parsed)
    return trees


def substitute(tree: Any, mapping: dict[str, str]) -> Any:
    if isinstance(tree, dict):
        return {k: substitute(v, mapping) for k, v in tree.items()}
    if isinstance(tree, list):
        return [substitute(v, mapping) for v in tree]
    if isinstance(tree, str):
        return mapping.get(tree, tree)
    return tree


def fill(template: Any, value: str) -> Any:
    """The payload with PLACEHOLDER (and names derived from it) replaced by `value`."""
    return substitute(template, {PLACEHOLDER: value, f"{PLACEHOLDER}_owner": f"{value}_owner"})


def assert_same_plan_as_template(request_type: str, template: dict, value: str, *,
                                 secrets: dict | None = None, rendered_payload: dict | None = None) -> None:
    """render(payload) has the template's structure with the slot holding exactly `value`."""
    module = module_for(request_type)
    expected = fill(plan_tree(plan_text(module.render(template, secrets=fill(secrets, PLACEHOLDER)
                                                      if secrets else None))), value)
    payload = rendered_payload if rendered_payload is not None else fill(template, value)
    actual = plan_tree(plan_text(module.render(payload, secrets=fill(secrets, value) if secrets else None)))
    assert actual == expected


def render_refuses_or_matches(request_type: str, template: dict, value: str, **kwargs: Any) -> None:
    try:
        assert_same_plan_as_template(request_type, template, value, **kwargs)
    except (ValueError, psycopg.DataError):
        # Refusing to render is safe; rendering something else is not (the assert above).
        pass
    except pglast.parser.ParseError:
        # A statement the server cannot parse runs nothing (e.g. an empty name renders as "");
        # only the validated path below must always produce a valid plan.
        pass


# --- render(): every slot of every plan, any string -------------------------------------------

SCHEMA_TEMPLATES = [
    {"database": "app", "name": PLACEHOLDER, "owner_role": "fixed_owner"},
    {"database": "app", "name": "fixed", "owner_role": PLACEHOLDER},
    {"database": "app", "name": PLACEHOLDER, "owner_role": f"{PLACEHOLDER}_owner"},
]
ROLE_TEMPLATES = [
    {"name": PLACEHOLDER, "login": False, "member_of": [], "connection_limit": None, "valid_until": None},
    {"name": PLACEHOLDER, "login": True, "member_of": ["grp"], "connection_limit": 5,
     "valid_until": "2031-01-01T00:00:00Z"},
    {"name": "svc", "login": False, "member_of": ["grp", PLACEHOLDER], "connection_limit": -1, "valid_until": None},
    {"name": "svc", "login": True, "member_of": [], "connection_limit": None, "valid_until": PLACEHOLDER},
]
ACCESS_BASE = {"role": "reader", "database": "app", "schema": "sales", "privileges": ["USAGE", "SELECT"],
               "tables": "all", "default_privileges": True, "expires_at": None, "schema_owner": "sales_owner"}
ACCESS_TEMPLATES = [
    {**ACCESS_BASE, "role": PLACEHOLDER},
    {**ACCESS_BASE, "schema": PLACEHOLDER},
    {**ACCESS_BASE, "schema_owner": PLACEHOLDER},
    {**ACCESS_BASE, "tables": ["orders", PLACEHOLDER], "default_privileges": False},
    {**ACCESS_BASE, "schema": PLACEHOLDER, "tables": [PLACEHOLDER], "default_privileges": False},
]


@pytest.mark.parametrize("template", SCHEMA_TEMPLATES)
@given(value=IDENTIFIERS)
@FAST
def test_schema_plan_keeps_its_structure_for_any_name(template, value):
    render_refuses_or_matches("schema", template, value)


@pytest.mark.parametrize("template", ROLE_TEMPLATES)
@given(value=IDENTIFIERS)
@FAST
def test_role_plan_keeps_its_structure_for_any_name_or_date(template, value):
    assume(value or template["valid_until"] != PLACEHOLDER)  # an empty date is no date: omitted
    render_refuses_or_matches("role", template, value)


@given(password=IDENTIFIERS)
@FAST
def test_login_role_plan_with_any_password_is_one_create_role_holding_exactly_it(password):
    template = {"name": "svc", "login": True, "member_of": [], "connection_limit": None, "valid_until": None}
    render_refuses_or_matches("role", template, password, secrets={"password": PLACEHOLDER})


@pytest.mark.parametrize("request_type", ["grant", "revoke"])
@pytest.mark.parametrize("template", ACCESS_TEMPLATES)
@given(value=IDENTIFIERS)
@FAST
def test_access_plans_keep_their_structure_for_any_name(request_type, template, value):
    render_refuses_or_matches(request_type, template, value)


def test_the_oracle_sees_an_injection_through_a_dollar_quote():
    """The oracle itself can fail: a DO body closed early by `$$` is another plan."""
    injected = 'DO $$BEGIN CREATE ROLE "a$$; DROP TABLE t; --" NOLOGIN; END$$'
    benign = 'DO $$BEGIN CREATE ROLE "zzslot" NOLOGIN; END$$'
    with pytest.raises((AssertionError, pglast.Error)):
        assert plan_tree([injected]) == fill(plan_tree([benign]), "a$$; DROP TABLE t; --")


def test_schema_render_refuses_an_owner_that_would_close_the_do_block():
    with pytest.raises(ValueError):
        module_for("schema").render({"database": "app", "name": "s", "owner_role": "a$$; DROP TABLE t; --"})


@pytest.mark.parametrize("name", ["", "a" * 64, "é" * 32, "a\x00b"])
def test_render_refuses_names_the_server_would_not_keep_as_written(name):
    """Over 63 bytes the server truncates (another name); empty does not parse; NUL cannot be sent."""
    with pytest.raises(ValueError):
        module_for("role").render({"name": name, "login": False})
    with pytest.raises(ValueError):
        module_for("grant").render({**ACCESS_BASE, "tables": ["orders", name], "default_privileges": False})


# --- validate() then render(): any string in a name field -------------------------------------

SNAPSHOT = {
    "databases": {"app": {"schemas": {
        "public": {"owner": "pg_database_owner", "tables": []},
        "sales": {"owner": "sales_owner", "tables": ["orders"]},
    }}},
    "roles": {
        "postgres": {"login": True, "superuser": True, "member_of": []},
        "sales_owner": {"login": False, "superuser": False, "member_of": []},
        "grp": {"login": False, "superuser": False, "member_of": []},
        "reader": {"login": True, "superuser": False, "member_of": []},
    },
}


TEAM_ID = 1


@pytest.fixture
def world():
    """The portal's records and the inventory the validators see: a PlanContext's parts (no database)."""
    roles = [ManagedRoleFact("sales_owner", TEAM_ID, login=False), ManagedRoleFact("grp", TEAM_ID, login=False),
             ManagedRoleFact("reader", TEAM_ID, login=True)]
    return {"inventory": copy.deepcopy(SNAPSHOT), "roles": {role.name: role for role in roles},
            "schemas": {("app", "sales"): ManagedSchemaFact("app", "sales", "sales_owner", TEAM_ID)}}


def validate_or_none(world, request_type: str, payload: Any) -> dict | None:
    ctx = PlanContext(instance=InstanceFacts(name="inv", id=1), team_id=TEAM_ID, team_name="payments",
                      inventory=world["inventory"], roles=world["roles"], schemas=world["schemas"])
    try:
        return module_for(request_type).validate(payload, ctx)
    except InvalidPayload as error:
        assert error.status_code == 400 and error.errors, "a refusal names the field"
        return None


def make_exist(world, *, role: str | None = None, table: str | None = None, schema: str | None = None) -> None:
    """Let the portal and the inventory know a role / table / schema named by the example."""
    snapshot = world["inventory"]
    if role is not None:
        world["roles"].setdefault(role, ManagedRoleFact(role, TEAM_ID, login=True))
        snapshot["roles"].setdefault(role, {"login": True, "superuser": False, "member_of": []})
    if schema is not None:
        world["schemas"].setdefault(("app", schema), ManagedSchemaFact("app", schema, "sales_owner", TEAM_ID))
        snapshot["databases"]["app"]["schemas"].setdefault(schema, {"owner": "sales_owner", "tables": ["orders"]})
    if table is not None:
        snapshot["databases"]["app"]["schemas"]["sales"]["tables"].append(table)


def in_fresh_world(world, check) -> None:
    """Run one example, then put the world back as it was: its records do not leak into the next."""
    saved = copy.deepcopy(world)
    try:
        check()
    finally:
        world.clear()
        world.update(saved)


@given(value=ANY_STRING)
@WITH_WORLD
def test_schema_name_is_refused_or_is_exactly_the_name_in_the_plan(world, value):
    validated = validate_or_none(world, "schema", {"database": "app", "name": value})
    if validated is not None:
        assert name_problem(value) is None
        assert_same_plan_as_template("schema", SCHEMA_TEMPLATES[2], value, rendered_payload=validated)


@given(value=ANY_STRING)
@WITH_WORLD
def test_schema_owner_role_is_refused_or_is_exactly_the_owner_in_the_plan(world, value):
    validated = validate_or_none(world, "schema", {"database": "app", "name": "fixed", "owner_role": value})
    if validated is not None:
        assert name_problem(value, role=True) is None
        assert_same_plan_as_template("schema", SCHEMA_TEMPLATES[1], value, rendered_payload=validated)


@given(value=ANY_STRING, login=st.booleans())
@WITH_WORLD
def test_role_name_is_refused_or_is_exactly_the_role_in_the_plan(world, value, login):
    validated = validate_or_none(world, "role", {"name": value, "login": login})
    if validated is not None:
        assert name_problem(value, role=True) is None
        template = {"name": PLACEHOLDER, "login": login, "member_of": [], "connection_limit": None,
                    "valid_until": None}
        assert_same_plan_as_template("role", template, value, rendered_payload=validated)


@pytest.mark.parametrize("request_type", ["grant", "revoke"])
@given(value=ANY_STRING)
@WITH_WORLD
def test_grantee_role_is_refused_or_is_exactly_the_grantee_in_the_plan(world, request_type, value):
    def check():
        if name_problem(value, role=True) is None:
            make_exist(world, role=value)  # the portal knows it: the validator may accept it
        payload = {"role": value, "database": "app", "schema": "sales", "privileges": ["USAGE", "SELECT"],
                   "tables": "all", "default_privileges": True}
        validated = validate_or_none(world, request_type, payload)
        if validated is not None:
            assert name_problem(value, role=True) is None
            assert_same_plan_as_template(request_type, ACCESS_TEMPLATES[0], value, rendered_payload=validated)

    in_fresh_world(world, check)


@pytest.mark.parametrize("request_type", ["grant", "revoke"])
@given(value=ANY_STRING)
@WITH_WORLD
def test_table_name_is_refused_or_is_exactly_the_table_in_the_plan(world, request_type, value):
    def check():
        if storable(value):  # a cluster's catalog (and the inventory) holds no NUL, no lone surrogate
            make_exist(world, table=value)  # tables are whatever the cluster holds: any name
        payload = {"role": "reader", "database": "app", "schema": "sales", "privileges": ["USAGE", "SELECT"],
                   "tables": ["orders", value]}
        validated = validate_or_none(world, request_type, payload)
        if validated is not None:
            template = {**ACCESS_TEMPLATES[3], "tables": sorted(["orders", PLACEHOLDER])}
            if value == "orders":
                template["tables"] = ["orders"]
            elif sorted(["orders", value]) != ["orders", value]:
                template["tables"] = [PLACEHOLDER, "orders"]
            assert_same_plan_as_template(request_type, template, value, rendered_payload=validated)

    in_fresh_world(world, check)


@given(value=ANY_STRING)
@WITH_WORLD
def test_schema_of_a_grant_is_refused_or_is_exactly_the_schema_in_the_plan(world, value):
    def check():
        if name_problem(value) is None:
            make_exist(world, schema=value)
        payload = {"role": "reader", "database": "app", "schema": value, "privileges": ["USAGE", "SELECT"],
                   "default_privileges": True}
        validated = validate_or_none(world, "grant", payload)
        if validated is not None:
            assert name_problem(value) is None
            assert_same_plan_as_template("grant", ACCESS_TEMPLATES[1], value, rendered_payload=validated)

    in_fresh_world(world, check)


# --- validators never raise anything but InvalidPayload ---------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                         st.sampled_from(["app", "sales", "reader", "grp", "orders", "all", "SELECT", "usage",
                                          "2031-01-01T00:00:00Z", "2031-01-01", "9999-12-31T23:59:59-23:59",
                                          "0001-01-01T00:00:00+23:00", "", "\x00"]))
JSON = st.recursive(JSON_SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=12)
FIELDS = ["name", "login", "member_of", "connection_limit", "valid_until", "database", "owner_role", "role",
          "schema", "privileges", "tables", "default_privileges", "expires_at", "schema_owner", "sql", "superuser"]
# Payloads shaped like the real ones (known keys, any JSON values), and any JSON at all.
PAYLOADS = st.one_of(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8), JSON)

PAYLOAD_TYPES = ["schema", "role", "grant", "revoke"]


@pytest.mark.parametrize("request_type", PAYLOAD_TYPES)
@given(payload=PAYLOADS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_validators_raise_nothing_but_invalid_payload(world, request_type, payload):
    def check():
        validated = validate_or_none(world, request_type, payload)
        if validated is not None:
            # What validation accepts renders (with the secret-free placeholder) and parses.
            plan = plan_text(module_for(request_type).render(validated))
            assert plan and all(len(pglast.parse_sql(text)) == 1 for text in plan)

    in_fresh_world(world, check)
