"""Helpers for the DDL tests: a team schema on the managed cluster with an owner and a reader role."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql

from provisioning import connections


@dataclass
class TeamSchema:
    schema: str
    owner: str
    reader: str
    reader_password: str


def create_team_schema(instance, prefix: str = "ddl") -> TeamSchema:
    """A schema owned by a NOLOGIN owner role, with a LOGIN reader that default privileges reach.

    The reader's SELECT on future tables comes only from
    ALTER DEFAULT PRIVILEGES FOR ROLE owner IN SCHEMA s GRANT SELECT ON TABLES TO reader.
    """
    name = f"{prefix}_{secrets.token_hex(4)}"
    team = TeamSchema(schema=name, owner=f"{name}_owner", reader=f"{name}_reader",
                      reader_password=secrets.token_urlsafe(12))
    with connections.connect(instance, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(team.owner)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(team.reader), sql.Literal(team.reader_password)))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(team.schema), sql.Identifier(team.owner)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(team.schema), sql.Identifier(team.reader)))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(team.owner), sql.Identifier(team.schema), sql.Identifier(team.reader)))
    return team


def apply_steps(instance, database: str, steps) -> None:
    """Run steps as the plan contract says: transactional ones in one transaction, then the others alone."""
    with connections.connect(instance, database) as conn:
        with conn.transaction():
            for step in steps:
                if step.transactional:
                    conn.execute(step.statement)
    with connections.connect(instance, database, autocommit=True) as conn:
        for step in steps:
            if not step.transactional and (step.only_if is None or conn.execute(step.only_if).fetchone()[0]):
                conn.execute(step.statement)


def admin_query(instance, query, params=None, database: str = "app"):
    with connections.connect(instance, database) as conn:
        return conn.execute(query, params).fetchall()


def admin_exec(instance, *statements, database: str = "app") -> None:
    with connections.connect(instance, database, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def reader_connect(instance, team: TeamSchema) -> psycopg.Connection:
    return psycopg.connect(host=instance.host, port=instance.port, dbname="app", user=team.reader,
                           password=team.reader_password, connect_timeout=5)
