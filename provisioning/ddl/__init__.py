"""DDL requests: parse the requester's SQL with PostgreSQL's parser, keep it in its schema, review it.

parse.py   SQL text -> parsed statements (pglast), syntax errors with their position
scope.py   the allow-list of statement kinds and the check that every name stays in the schema
rules.py   review rules (findings with severities) over the parsed statements and table facts
facts.py   table facts (row estimates, sizes, column types) read from the cluster at submit
dry_run.py the plan run in a rolled-back transaction on dev/staging instances
"""
