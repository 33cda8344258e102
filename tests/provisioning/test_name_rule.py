"""The one naming rule (provisioning.plans.checks.name_problem): whole string, allow-list, plain words."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from provisioning.plans.checks import NAME_RE, name_problem

ALLOWED = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@pytest.mark.parametrize("name", ["payments", "payments_app", "payments_app_owner", "_private", "svc2",
                                  "a", "x" * 63, "analytics_2024_q1", "user_"])
def test_names_valid_until_now_stay_valid(name):
    assert name_problem(name) is None and name_problem(name, role=True) is None


def test_the_rule_is_judged_on_the_whole_string_not_up_to_a_trailing_newline():
    # "$" in a pattern also matches before a final "\n": the rule must not
    assert NAME_RE.fullmatch("name\n") is None
    assert "LINE FEED" in name_problem("name\n")
    assert "LINE FEED" in name_problem("\nname")


def test_every_character_outside_the_allow_list_is_refused_anywhere_in_a_name():
    """All of Unicode: controls, formats (zero-width, bidi), separators, spaces, other alphabets."""
    accepted = [hex(code) for code in range(sys.maxunicode + 1)
                if chr(code) not in ALLOWED and NAME_RE.fullmatch(f"ab{chr(code)}c") is not None]
    assert accepted == []


@pytest.mark.parametrize("category", ["Cc", "Cf", "Zl", "Zp", "Zs"])
def test_control_format_and_separator_characters_are_called_invisible_or_a_space(category):
    samples = [chr(code) for code in range(0x3000) if unicodedata.category(chr(code)) == category][:40]
    assert samples
    for char in samples:
        problem = name_problem(f"svc{char}x")
        assert "invisible or a space" in problem and f"U+{ord(char):04X}" in problem, (hex(ord(char)), problem)


@pytest.mark.parametrize(("name", "words"), [
    ("p\u0430yments", "CYRILLIC SMALL LETTER A"),
    ("\u0440ayments", "CYRILLIC SMALL LETTER ER"),
    ("payment\u0455", "CYRILLIC SMALL LETTER DZE"),
    ("caf\u00e9", "accented letters"),
    ("\u212aelvin", "KELVIN SIGN"),
    ("\uff41bc", "FULLWIDTH"),
    ("\u0131d", "DOTLESS I"),
])
def test_look_alike_letters_of_other_alphabets_are_refused_by_name(name, words):
    problem = name_problem(name)
    assert words in problem and "can look like a to z" in problem


@pytest.mark.parametrize(("name", "words"), [
    ("Payments", "upper case"),
    ("1st", "must not start with a digit"),
    ("has-dash", "'-') is not allowed"),
    ("dollar$", "'$') is not allowed"),
    ("a\ud800", "not valid text"),
    ("", "required"),
    ("x" * 64, "at most 63 characters"),
    ("pg_mine", "pg_ prefix"),
    ("select", "SQL keyword"),
])
def test_each_refusal_says_what_is_wrong_in_plain_words(name, words):
    problem = name_problem(name)
    assert words in problem
    # never the pattern itself
    assert not any(token in problem for token in ("^[", "]*", "$ (", "\\Z", "regex", "match"))


def test_role_names_the_server_treats_specially_are_refused_for_roles_only():
    assert name_problem("dbportal_replication") is None
    assert "reserved role name" in name_problem("dbportal_replication", role=True)
    assert "reserved role name" in name_problem("public", role=True)


def test_non_text_is_refused():
    for value in (None, 42, ["a"], {"a": 1}, b"name"):
        assert name_problem(value) == "required: a name"


@pytest.mark.parametrize(("request_type", "payload"), [
    ("role", {"name": "payments_svc\n", "login": False}),
    ("role", {"name": "svc", "login": False, "member_of": ["p\u0430yments_owner"]}),
    ("schema", {"database": "app", "name": "payments\u200b", "owner_role": "payments_owner"}),
    ("schema", {"database": "app", "name": "payments", "owner_role": "payments_owner\n"}),
])
def test_plans_refuse_to_render_a_stored_name_that_breaks_the_rule(request_type, payload):
    """A payload stored before the rule was judged whole (or edited in the database) never becomes
    a plan: the executor's re-render fails it ("could not be rendered again") before any SQL runs."""
    from provisioning.plans import module_for

    with pytest.raises(ValueError, match="breaks the naming rule"):
        module_for(request_type).render(payload)
