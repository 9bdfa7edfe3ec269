"""A throw-away PostgreSQL database for one test: created on the server at C2D_TEST_POSTGRES_URL (through
its `postgres` maintenance database), dropped afterwards whatever happened. Skips when the server is
unreachable."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL


def _admin_connection(base_url: str) -> Any:
    url = make_url(base_url)
    try:
        connection = psycopg2.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password or None,
            dbname="postgres",
            connect_timeout=3,
        )
    except psycopg2.OperationalError as exc:
        shown = url.render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL is unreachable at {shown} (set C2D_TEST_POSTGRES_URL): {exc}".strip())
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return connection


@contextlib.contextmanager
def fresh_database(base_url: str = POSTGRES_URL) -> Iterator[str]:
    """Yields the SQLAlchemy URL of a new, empty database named c2d_test_<random hex>."""
    admin = _admin_connection(base_url)
    name = f"c2d_test_{uuid.uuid4().hex}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.cursor() as cursor:
                # FORCE: a pool a failed test left open must not keep the database alive.
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    finally:
        admin.close()


def database_exists(name: str, base_url: str = POSTGRES_URL) -> bool:
    admin = _admin_connection(base_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cursor.fetchone() is not None
    finally:
        admin.close()
