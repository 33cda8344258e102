"""Plans: the exact SQL text of every request type and option (golden strings)."""

from __future__ import annotations

import pytest

from provisioning.plans import PASSWORD_PLACEHOLDER, module_for, plan_hash, plan_text


def text(request_type: str, payload: dict, secrets: dict | None = None) -> list[str]:
    return plan_text(module_for(request_type).render(payload, secrets=secrets))


def grant_payload(**overrides) -> dict:
    payload = {"role": "payments_svc", "database": "app", "schema": "payments_app", "privileges": ["SELECT"],
               "tables": "all", "default_privileges": False, "expires_at": None, "schema_owner": "payments_app_owner"}
    payload.update(overrides)
    return payload


SCHEMA_ABSENT = ("SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'payments_app') "
                 "-- must be true, else nothing is applied: the schema does not exist yet")


def role_absent(name: str) -> str:
    return (f"SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{name}') "
            "-- must be true, else nothing is applied: the role does not exist yet")


def test_schema_plan_asserts_both_names_are_free_then_creates_the_owner_group_role_and_the_schema():
    plan = text("schema", {"database": "app", "name": "payments_app", "owner_role": "payments_app_owner",
                           "create_owner_role": True})
    assert plan == [
        SCHEMA_ABSENT,
        role_absent("payments_app_owner"),
        'CREATE ROLE "payments_app_owner" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
        "DO $$BEGIN IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) "
        'THEN GRANT "payments_app_owner" TO CURRENT_USER; END IF; END$$',
        'CREATE SCHEMA "payments_app" AUTHORIZATION "payments_app_owner"',
    ]
    assert module_for("schema").database({"database": "app", "name": "x", "owner_role": "y"}) == "app"


def test_schema_plan_reusing_an_owner_role_asserts_it_is_an_existing_group_role():
    plan = text("schema", {"database": "app", "name": "payments_app", "owner_role": "payments_ops",
                           "create_owner_role": False})
    assert plan == [
        SCHEMA_ABSENT,
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'payments_ops' AND NOT rolcanlogin "
        "AND NOT rolsuper) -- must be true, else nothing is applied: the owner role exists and is a group role "
        "that cannot log in",
        "DO $$BEGIN IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) "
        'THEN GRANT "payments_ops" TO CURRENT_USER; END IF; END$$',
        'CREATE SCHEMA "payments_app" AUTHORIZATION "payments_ops"',
    ]


def test_schema_payload_stored_without_the_owner_decision_renders_as_creating_it():
    """Older stored payloads have no create_owner_role: they render as "create", which no longer
    matches their approved plan, so the executor refuses them as stale instead of guessing."""
    payload = {"database": "app", "name": "payments_app", "owner_role": "payments_app_owner"}
    assert text("schema", payload) == text("schema", {**payload, "create_owner_role": True})


def test_login_role_plan_shows_a_placeholder_and_never_a_password():
    payload = {"name": "payments_svc", "login": True, "member_of": [], "connection_limit": None, "valid_until": None}
    steps = module_for("role").render(payload)
    assert plan_text(steps) == [
        role_absent("payments_svc"),
        "CREATE ROLE \"payments_svc\" WITH LOGIN PASSWORD '<generated at apply time>' "
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    ]
    assert PASSWORD_PLACEHOLDER.as_string(None) in steps[1].text
    assert [step.secret for step in steps] == [False, True]
    assert module_for("role").database(payload) is None


def test_login_role_rendered_with_the_secret_carries_the_verifier_as_a_literal():
    payload = {"name": "payments_svc", "login": True, "member_of": [], "connection_limit": None, "valid_until": None}
    steps = module_for("role").render(payload, secrets={"password": "SCRAM-SHA-256$4096:it's"})
    assert steps[1].text == (
        "CREATE ROLE \"payments_svc\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:it''s' "
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    )
    assert steps[1].secret is True


def test_role_plan_with_every_option():
    payload = {"name": "svc", "login": True, "member_of": ["payments_app_owner", "readers"],
               "connection_limit": 5, "valid_until": "2030-01-31T18:00:00Z"}
    assert text("role", payload) == [
        role_absent("svc"),
        "CREATE ROLE \"svc\" WITH LOGIN PASSWORD '<generated at apply time>' NOSUPERUSER NOCREATEDB NOCREATEROLE "
        "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL '2030-01-31T18:00:00Z' "
        'IN ROLE "payments_app_owner", "readers"'
    ]


def test_nologin_role_plan_is_not_secret():
    steps = module_for("role").render({"name": "readers", "login": False, "member_of": [], "connection_limit": -1,
                                       "valid_until": None})
    assert plan_text(steps) == [
        role_absent("readers"),
        'CREATE ROLE "readers" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
        "CONNECTION LIMIT -1"
    ]
    assert not any(step.secret for step in steps)


def test_grant_of_table_privileges_implies_usage_on_the_schema():
    assert text("grant", grant_payload()) == [
        'GRANT USAGE ON SCHEMA "payments_app" TO "payments_svc"',
        'GRANT SELECT ON ALL TABLES IN SCHEMA "payments_app" TO "payments_svc"',
    ]


def test_grant_on_listed_tables_with_several_privileges_in_allow_list_order():
    plan = text("grant", grant_payload(privileges=["SELECT", "INSERT", "DELETE"], tables=["ledger", "orders"]))
    assert plan == [
        'GRANT USAGE ON SCHEMA "payments_app" TO "payments_svc"',
        'GRANT SELECT, INSERT, DELETE ON TABLE "payments_app"."ledger", "payments_app"."orders" TO "payments_svc"',
    ]


def test_grant_of_schema_privileges_only():
    assert text("grant", grant_payload(privileges=["USAGE", "CREATE"], tables=None)) == [
        'GRANT USAGE, CREATE ON SCHEMA "payments_app" TO "payments_svc"',
    ]


def test_grant_with_default_privileges_covers_future_tables_of_the_schema_owner():
    plan = text("grant", grant_payload(privileges=["SELECT", "UPDATE"], default_privileges=True))
    assert plan == [
        'GRANT USAGE ON SCHEMA "payments_app" TO "payments_svc"',
        'GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA "payments_app" TO "payments_svc"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "payments_app_owner" IN SCHEMA "payments_app" '
        'GRANT SELECT, UPDATE ON TABLES TO "payments_svc"',
    ]
    assert module_for("grant").database(grant_payload()) == "app"


def test_revoke_takes_back_in_reverse_order_and_only_what_is_listed():
    plan = text("revoke", grant_payload(privileges=["USAGE", "SELECT", "TRUNCATE"], default_privileges=True))
    assert plan == [
        'ALTER DEFAULT PRIVILEGES FOR ROLE "payments_app_owner" IN SCHEMA "payments_app" '
        'REVOKE SELECT, TRUNCATE ON TABLES FROM "payments_svc"',
        'REVOKE SELECT, TRUNCATE ON ALL TABLES IN SCHEMA "payments_app" FROM "payments_svc"',
        'REVOKE USAGE ON SCHEMA "payments_app" FROM "payments_svc"',
    ]


def test_revoke_on_listed_tables_leaves_the_schema_alone():
    assert text("revoke", grant_payload(tables=["orders"])) == [
        'REVOKE SELECT ON TABLE "payments_app"."orders" FROM "payments_svc"',
    ]
    assert module_for("revoke").database(grant_payload()) == "app"


def test_render_refuses_a_privilege_outside_the_allow_list_even_from_a_stored_payload():
    with pytest.raises(ValueError):
        text("grant", grant_payload(privileges=["SELECT; DROP TABLE x"]))


def test_identifiers_are_always_quoted_so_odd_table_names_stay_names():
    plan = text("grant", grant_payload(tables=['Odd "name"']))
    assert plan[1] == 'GRANT SELECT ON TABLE "payments_app"."Odd ""name""" TO "payments_svc"'


def test_plan_hash_binds_to_the_exact_text():
    first = plan_hash(text("grant", grant_payload()))
    assert first == plan_hash(text("grant", grant_payload()))
    assert first != plan_hash(text("grant", grant_payload(privileges=["SELECT", "INSERT"])))
    assert len(first) == 64


@pytest.mark.parametrize("request_type", ["schema", "role", "grant", "revoke", "ddl", "replica"])
def test_every_plan_module_declares_its_optional_hooks_and_has_them(request_type):
    from provisioning.plans import OPTIONAL_HOOKS, hook, hooks_of

    module = module_for(request_type)
    assert callable(module.validate) and callable(module.render) and callable(module.database)
    assert hooks_of(module) <= set(OPTIONAL_HOOKS)
    for name, functions in OPTIONAL_HOOKS.items():
        declared = name in hooks_of(module)
        # a hook is there exactly when declared: callers ask the declaration, never hasattr
        assert all(callable(getattr(module, f, None)) for f in functions) if declared else \
            not hasattr(module, functions[0])
        assert (hook(module, name) is not None) == declared


def test_plans_render_from_the_stored_payload_alone_with_or_without_a_context():
    from provisioning.plans.context import InstanceFacts, PlanContext

    payload = grant_payload()
    ctx = PlanContext(instance=InstanceFacts(name="demo"))
    assert text("grant", payload) == plan_text(module_for("grant").render(payload, ctx))
