"""Fixtures for the tests of the portal's screens and services."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.provisioning.helpers import admin_conn, unique


@pytest.fixture
def lock_table(managed_cluster):
    table = unique("locked")
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("CREATE TABLE public.{} (id int PRIMARY KEY, v int)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO public.{} VALUES (1, 0)").format(sql.Identifier(table)))
    yield table
    with admin_conn(managed_cluster, "app") as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(table)))
