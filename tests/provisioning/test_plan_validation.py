"""Plan validation: every rule answers a 400 naming the payload field (InvalidPayload).

Unit tests: the plans are pure, so the world they validate against is a PlanContext built here,
with no database (the selector that builds it from the portal's records is tested in
tests/portal/test_plan_context.py).
"""

from __future__ import annotations

import copy

import pytest

from portal.errors import InvalidPayload
from provisioning.plans import module_for
from provisioning.plans.context import (
    REQUESTER,
    REVIEWER,
    SYSTEM,
    InstanceFacts,
    ManagedRoleFact,
    ManagedSchemaFact,
    PlanContext,
)

SNAPSHOT = {
    "databases": {
        "app": {"schemas": {
            "public": {"owner": "pg_database_owner", "tables": []},
            "payments_app": {"owner": "payments_app_owner", "tables": ["ledger", "orders"]},
            "reports": {"owner": "reports_owner", "tables": ["daily"]},
        }},
        "postgres": {"schemas": {"public": {"owner": "pg_database_owner", "tables": []}}},
    },
    "roles": {
        "postgres": {"login": True, "superuser": True, "member_of": []},
        "payments_app_owner": {"login": False, "superuser": False, "member_of": []},
        "payments_svc": {"login": True, "superuser": False, "member_of": []},
        "reports_owner": {"login": False, "superuser": False, "member_of": []},
        "legacy_login": {"login": True, "superuser": False, "member_of": []},
    },
}


TEAMS = {"payments": 1, "analytics": 2}


@pytest.fixture
def world():
    """Teams payments and analytics; an instance whose inventory and portal records are known."""
    payments, analytics = TEAMS["payments"], TEAMS["analytics"]
    roles = [ManagedRoleFact("payments_app_owner", payments, login=False),
             ManagedRoleFact("payments_svc", payments, login=True),
             ManagedRoleFact("reports_owner", analytics, login=False)]
    schemas = [ManagedSchemaFact("app", "payments_app", "payments_app_owner", payments),
               ManagedSchemaFact("app", "reports", "reports_owner", analytics)]
    return {"instance": InstanceFacts(name="inv", id=1), "inventory": copy.deepcopy(SNAPSHOT),
            "roles": {role.name: role for role in roles},
            "schemas": {(schema.database, schema.name): schema for schema in schemas}}


def context(world, team: str = "payments", persona: str = SYSTEM) -> PlanContext:
    return PlanContext(instance=world["instance"], team_id=TEAMS[team], team_name=team, persona=persona,
                       inventory=world["inventory"], roles=world["roles"], schemas=world["schemas"])


def validate(world, request_type: str, payload: dict, team: str = "payments") -> dict:
    return module_for(request_type).validate(payload, context(world, team))


def errors_of(world, request_type: str, payload: dict, team: str = "payments") -> dict:
    with pytest.raises(InvalidPayload) as caught:
        validate(world, request_type, payload, team)
    return caught.value.errors


BAD_NAMES = [
    ("Payments", "upper case"),
    ("1st", "must not start with a digit"),
    ("has-dash", "'-') is not allowed"),
    ("has space", "U+0020 SPACE"),
    ("é", "accented letters"),
    ("name\n", "U+000A LINE FEED"),
    ("", "required"),
    ("pg_mine", "pg_ prefix"),
    ("select", "keyword"),
    ("user", "keyword"),
    ("authorization", "keyword"),
    ("a" * 64, "at most 63 characters"),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_schema_name_breaking_the_naming_rule_is_refused(world, name, message):
    errors = errors_of(world, "schema", {"database": "app", "name": name})
    assert message in " ".join(errors["payload.name"])


@pytest.mark.parametrize(("name", "message"), [*BAD_NAMES, ("public", "reserved role"),
                                               ("current_user", "keyword")])
def test_role_name_breaking_the_naming_rule_is_refused(world, name, message):
    errors = errors_of(world, "role", {"name": name, "login": False})
    assert message in " ".join(errors["payload.name"])


def test_a_63_byte_name_is_accepted_and_an_unreserved_keyword_too(world):
    assert validate(world, "role", {"name": "r" * 63, "login": False})["name"] == "r" * 63
    assert validate(world, "role", {"name": "role", "login": False})["name"] == "role"


@pytest.mark.parametrize("request_type", ["schema", "role", "grant", "revoke"])
def test_unknown_payload_keys_are_refused_not_dropped(world, request_type):
    errors = errors_of(world, request_type, {"superuser": True})
    assert errors["payload.superuser"] == ["unknown field for this request type"]


@pytest.mark.parametrize("request_type", ["schema", "role", "grant", "revoke"])
def test_a_payload_that_is_not_an_object_is_refused(world, request_type):
    assert "payload" in errors_of(world, request_type, ["x"])


def test_missing_required_fields_are_named(world):
    assert set(errors_of(world, "grant", {})) >= {"payload.role", "payload.database", "payload.schema",
                                                 "payload.privileges"}


def test_schema_defaults_its_owner_to_a_new_group_role(world):
    assert validate(world, "schema", {"database": "app", "name": "billing"}) == {
        "database": "app", "name": "billing", "owner_role": "billing_owner", "create_owner_role": True}


def test_schema_may_be_owned_by_an_existing_group_role_of_the_team(world):
    payload = {"database": "app", "name": "billing", "owner_role": "payments_app_owner"}
    validated = validate(world, "schema", payload)
    assert (validated["owner_role"], validated["create_owner_role"]) == ("payments_app_owner", False)


@pytest.mark.parametrize(("owner", "message"), [
    ("payments_svc", "login role"),
    ("reports_owner", "not a group role of team payments"),
    ("legacy_login", "not a group role of team payments"),
    ("Owner", "upper case"),
])
def test_schema_owner_must_be_a_nologin_group_role_of_the_team(world, owner, message):
    errors = errors_of(world, "schema", {"database": "app", "name": "billing", "owner_role": owner})
    assert message in " ".join(errors["payload.owner_role"])


def test_schema_that_exists_or_database_that_does_not_is_refused(world):
    assert "already exists" in errors_of(world, "schema", {"database": "app", "name": "reports"})["payload.name"][0]
    assert "no database" in errors_of(world, "schema", {"database": "nope", "name": "x"})["payload.database"][0]


def test_schema_name_too_long_for_its_owner_role_asks_for_one(world):
    errors = errors_of(world, "schema", {"database": "app", "name": "s" * 60})
    assert "owner_role" in errors["payload.name"][0]


def test_without_an_inventory_nothing_is_validated_blindly(world):
    world["inventory"] = None
    assert "inventory" in errors_of(world, "schema", {"database": "app", "name": "billing"})["payload"][0]


def test_role_with_every_option_is_normalised(world):
    payload = {"name": "billing_svc", "login": True, "member_of": ["payments_app_owner", "payments_app_owner"],
               "connection_limit": 10, "valid_until": "2035-06-01T12:00:00+02:00"}
    assert validate(world, "role", payload) == {
        "name": "billing_svc", "login": True, "member_of": ["payments_app_owner"], "connection_limit": 10,
        "valid_until": "2035-06-01T10:00:00Z"}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("login", "yes", "true or false"),
    ("member_of", "payments_app_owner", "list"),
    ("member_of", ["reports_owner"], "not a group role the portal manages for team payments"),
    ("member_of", ["payments_svc"], "not a group role"),
    ("member_of", ["postgres"], "not a group role"),
    ("member_of", ["pg_read_all_data"], "pg_ prefix"),
    ("connection_limit", -2, "integer from -1"),
    ("connection_limit", True, "integer from -1"),
    ("connection_limit", "5", "integer from -1"),
    ("valid_until", "2000-01-01T00:00:00Z", "future"),
    ("valid_until", "tomorrow", "ISO 8601"),
    ("valid_until", "2035-01-01T00:00:00", "timezone"),
    ("valid_until", "2999-01-01T00:00:00Z", "ten years"),
])
def test_role_options_are_checked(world, field, value, message):
    payload = {"name": "billing_svc", "login": True, field: value}
    assert message in " ".join(errors_of(world, "role", payload)[f"payload.{field}"])


@pytest.mark.parametrize("attribute", ["superuser", "createrole", "createdb", "replication", "bypassrls"])
def test_dangerous_role_attributes_cannot_even_be_asked_for(world, attribute):
    errors = errors_of(world, "role", {"name": "x", "login": False, attribute: True})
    assert f"payload.{attribute}" in errors


def test_existing_role_name_is_refused(world):
    assert "already exists" in errors_of(world, "role", {"name": "legacy_login", "login": True})["payload.name"][0]


def grant(**overrides) -> dict:
    payload = {"role": "payments_svc", "database": "app", "schema": "payments_app", "privileges": ["select"]}
    payload.update(overrides)
    return payload


def test_grant_is_normalised_with_the_schema_owner_and_all_tables(world):
    assert validate(world, "grant", grant()) == {
        "role": "payments_svc", "database": "app", "schema": "payments_app", "privileges": ["SELECT"],
        "tables": "all", "default_privileges": False, "expires_at": None, "schema_owner": "payments_app_owner"}


def test_a_validated_grant_validates_again_unchanged(world):
    once = validate(world, "grant", grant(tables=["orders"], expires_at="2035-01-01T00:00:00Z"))
    assert validate(world, "grant", once) == once


def test_cross_team_grant_on_another_teams_managed_schema_is_valid(world):
    assert validate(world, "grant", grant(schema="reports"))["schema_owner"] == "reports_owner"


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"privileges": ["SELECT", "SUPERUSER"]}, "privileges", "not one of"),
    ({"privileges": ["ALL"]}, "privileges", "not one of"),
    ({"privileges": []}, "privileges", "non-empty"),
    ({"privileges": "SELECT"}, "privileges", "non-empty"),
    ({"tables": ["orders", "missing"]}, "tables", "no table 'missing'"),
    ({"tables": []}, "tables", "non-empty"),
    ({"tables": "some"}, "tables", "non-empty"),
    ({"privileges": ["USAGE"], "tables": "all"}, "tables", "only go with table privileges"),
    ({"default_privileges": True, "tables": ["orders"]}, "default_privileges", 'use tables "all"'),
    ({"default_privileges": True, "privileges": ["USAGE"]}, "default_privileges", "need a table privilege"),
    ({"default_privileges": "yes"}, "default_privileges", "true or false"),
    ({"role": "nobody"}, "role", "no role 'nobody' of team payments"),
    ({"role": "reports_owner"}, "role", "of team payments"),
    ({"role": "Bad"}, "role", "upper case"),
    ({"schema": "public"}, "schema", "manages no schema"),
    ({"schema": "nope"}, "schema", "manages no schema"),
    ({"database": "nope"}, "database", "no database"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "future"),
    ({"schema_owner": "someone"}, "schema_owner", "derived"),
])
def test_grant_rules(world, overrides, field, message):
    assert message in " ".join(errors_of(world, "grant", grant(**overrides))[f"payload.{field}"])


def test_grant_to_a_managed_role_missing_on_the_cluster_is_refused(world):
    world["roles"]["ghost"] = ManagedRoleFact("ghost", TEAMS["payments"], login=True)
    assert "does not exist" in errors_of(world, "grant", grant(role="ghost"))["payload.role"][0]


def test_revoke_accepts_any_existing_role_and_schema_but_no_expiry(world):
    payload = grant(role="legacy_login", schema="public", privileges=["USAGE"])
    assert validate(world, "revoke", payload)["schema_owner"] == "pg_database_owner"
    assert "does not expire" in errors_of(world, "revoke", grant(expires_at="2035-01-01T00:00:00Z"))[
        "payload.expires_at"][0]
    assert "does not exist" in errors_of(world, "revoke", grant(role="nobody"))["payload.role"][0]
    assert "no schema" in errors_of(world, "revoke", grant(schema="nope"))["payload.schema"][0]


def test_every_problem_is_reported_at_once(world):
    errors = errors_of(world, "grant", grant(role="Bad", privileges=["NOPE"], tables=["missing"]))
    assert {"payload.role", "payload.privileges"} <= set(errors)


def test_a_developer_revokes_only_what_their_team_holds_or_gives(world):
    # analytics' role on analytics' schema: not payments' business
    world["roles"]["legacy_login"] = ManagedRoleFact("legacy_login", TEAMS["analytics"], login=True)
    revoke = module_for("revoke")
    foreign = grant(role="legacy_login", schema="reports")
    with pytest.raises(InvalidPayload) as caught:
        revoke.validate(foreign, context(world, persona=REQUESTER))
    assert "belongs to team payments" in caught.value.errors["payload.role"][0]
    # their own role, or their own schema, is fine; reviewers and the system may revoke anything
    ours = grant(role="payments_svc", schema="reports")
    assert revoke.validate(ours, context(world, persona=REQUESTER))["role"] == "payments_svc"
    theirs_on_ours = grant(role="legacy_login", schema="payments_app")
    assert revoke.validate(theirs_on_ours, context(world, persona=REQUESTER))["schema"] == "payments_app"
    for persona in (REVIEWER, SYSTEM):
        assert revoke.validate(foreign, context(world, persona=persona))["role"] == "legacy_login"


def test_a_role_the_team_once_had_counts_as_theirs_for_a_revoke(world):
    # dropped since, it may still hold privileges on the cluster: the team may take them back
    world["roles"]["old_svc"] = ManagedRoleFact("old_svc", TEAMS["payments"], login=True, dropped=True)
    world["inventory"]["roles"]["old_svc"] = {"login": True, "superuser": False, "member_of": []}
    payload = grant(role="old_svc", schema="reports")
    assert module_for("revoke").validate(payload, context(world, persona=REQUESTER))["role"] == "old_svc"
    # but a dropped role is no grantee, and its name is not free for a new role
    assert "no role 'old_svc'" in errors_of(world, "grant", grant(role="old_svc"))["payload.role"][0]
    world["roles"]["gone_svc"] = ManagedRoleFact("gone_svc", TEAMS["payments"], login=True, dropped=True)
    assert "already exists" in errors_of(world, "role", {"name": "gone_svc", "login": True})["payload.name"][0]
