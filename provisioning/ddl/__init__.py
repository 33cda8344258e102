"""DDL requests: parse the requester's SQL with PostgreSQL's parser, keep it in its schema, review it.

parse.py   SQL text -> parsed statements (pglast), syntax errors with their position
scope.py   the allow-list of statement kinds and the check that every name stays in the schema
rules.py   review rules (findings with severities) over the parsed statements and table facts
functions.py the reviewed allow-list of functions requester SQL may call
facts.py   table facts (row estimates, sizes, column types) read from the cluster at submit
(the dry run, I/O over the executor login, is provisioning/dry_run.py)
"""
