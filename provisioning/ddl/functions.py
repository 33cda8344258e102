"""The functions requester SQL may call: a reviewed allow-list of PostgreSQL built-ins.

Any expression PostgreSQL evaluates while DDL runs (a DEFAULT filled in for existing rows, a
CHECK validated against them, an index expression, the query of CREATE TABLE AS or of a
materialized view) can call a function, and a function can do anything its definition allows:
run a query given as text (`ts_rewrite(tsquery, text)`, `query_to_xml`), change the session
(`set_config('role', …)`), read files or talk to other servers. A deny-list of such functions
cannot be complete, so the portal keeps the opposite: a call is accepted only when its name is
on this list, and every accepted call is rewritten to `pg_catalog.<name>` so that a same-named
function planted in a user schema (a SECURITY DEFINER detour) can never be the one that runs.

What is on the list: deterministic built-ins over values (text, numbers, dates, JSON, arrays,
full-text search), aggregates and window functions for the queries of views and CREATE TABLE
AS, the clock, random values and UUIDs, and the sequence functions (whose sequence names the
scope check keeps inside the request's schema). What is never on it: anything that executes a
query string, reads or writes files or large objects, reads settings or the server's state,
signals other sessions, or reaches other servers; no `pg_*` function at all.

The list is versioned with the review rules: a change to it is a change to what reviewers
approve, so ALLOWLIST_VERSION moves with every edit and is shown on the review rules page and
in docs/ddl.md.
"""

from __future__ import annotations

from pglast import ast

from provisioning.ddl.parse import walk

ALLOWLIST_VERSION = "2026-12-04.1"

# Grouped for the reader (docs/ddl.md prints them by group); names are lower case, unqualified.
ALLOWED_FUNCTIONS: dict[str, frozenset[str]] = {
    "date and time": frozenset({
        "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "date_trunc", "date_part",
        "extract", "date_bin", "make_date", "make_time", "make_timestamp", "make_timestamptz", "make_interval",
        "age", "to_timestamp", "to_date", "to_char", "to_number", "justify_days", "justify_hours",
        "justify_interval", "isfinite", "timezone", "overlaps",
    }),
    "text": frozenset({
        "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length", "bit_length",
        "btrim", "ltrim", "rtrim", "substring", "substr", "overlay", "position", "strpos", "replace", "translate",
        "concat", "concat_ws", "left", "right", "lpad", "rpad", "repeat", "reverse", "split_part", "starts_with",
        "md5", "sha224", "sha256", "sha384", "sha512", "encode", "decode", "format", "quote_ident",
        "quote_literal", "quote_nullable", "regexp_replace", "regexp_match", "regexp_matches", "regexp_like",
        "regexp_count", "regexp_substr", "regexp_instr", "regexp_split_to_array", "string_to_array",
        "array_to_string", "chr", "ascii", "to_hex", "normalize", "is_normalized", "similar_to_escape",
    }),
    "numbers": frozenset({
        "abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "mod", "div", "power", "sqrt", "cbrt",
        "exp", "ln", "log", "log10", "pi", "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan",
        "atan2", "width_bucket", "gcd", "lcm", "random", "num_nulls", "num_nonnulls",
    }),
    "identifiers": frozenset({"gen_random_uuid"}),
    "json": frozenset({
        "to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
        "jsonb_build_array", "jsonb_set", "jsonb_insert", "jsonb_strip_nulls", "json_strip_nulls",
        "jsonb_typeof", "json_typeof", "jsonb_array_length", "json_array_length", "jsonb_extract_path",
        "jsonb_extract_path_text", "json_extract_path", "json_extract_path_text", "jsonb_path_exists",
        "jsonb_path_match", "jsonb_path_query_first", "jsonb_pretty", "row_to_json",
    }),
    "arrays": frozenset({
        "array_length", "cardinality", "array_append", "array_prepend", "array_cat", "array_position",
        "array_positions", "array_remove", "array_replace", "array_lower", "array_upper", "array_ndims",
        "array_dims", "unnest", "generate_series",
    }),
    "full-text search": frozenset({
        "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery", "setweight",
    }),
    "aggregates and windows": frozenset({
        "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "stddev", "stddev_pop",
        "stddev_samp", "variance", "var_pop", "var_samp", "array_agg", "string_agg", "json_agg", "jsonb_agg",
        "json_object_agg", "jsonb_object_agg", "percentile_cont", "percentile_disc", "mode", "row_number",
        "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value",
        "nth_value",
    }),
    # The scope check keeps the sequence a string names inside the request's schema.
    "sequences": frozenset({"nextval", "currval", "setval"}),
}

ALLOWED = frozenset().union(*ALLOWED_FUNCTIONS.values())

# Never allowed, whatever the list above says: the classes the outside security test used or
# that reach beyond the plan (tests/security check the list against these and pg_proc).
NEVER = frozenset({
    "set_config", "current_setting", "ts_rewrite", "ts_stat", "query_to_xml", "query_to_xmlschema",
    "query_to_xml_and_xmlschema", "cursor_to_xml", "table_to_xml", "schema_to_xml", "database_to_xml",
    "dblink", "lo_import", "lo_export", "lastval", "system_user", "xpath", "txid_current",
})
NEVER_PREFIXES = ("pg_", "dblink", "lo_", "xml")


def allowed(name: str) -> bool:
    """True when a call of the built-in `name` (unqualified, any case) may appear in requester SQL."""
    lowered = name.lower()
    return lowered in ALLOWED and lowered not in NEVER and not lowered.startswith(NEVER_PREFIXES)


def pin_to_builtins(tree: ast.Node) -> None:
    """Pin every call in a checked tree to the built-in: `lower(x)` runs as `pg_catalog.lower(x)`.

    Unqualified, a call resolves through search_path (the request's schema), where a function of
    the same name and a better-matching signature would win over the built-in. Called after the
    scope check has accepted every call (so each is a plain name on the list).
    """
    for node in walk(tree):
        if isinstance(node, ast.FuncCall) and len(node.funcname) == 1:
            node.funcname = (ast.String(sval="pg_catalog"), node.funcname[0])
