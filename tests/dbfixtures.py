"""Helpers for the database tests: real servers, unique tables dropped afterwards.

The servers must be reachable: a test that cannot connect fails (never skips) with a message
naming the script that brings them up, `scripts/services.sh up`.
"""

import contextlib
import uuid
from collections.abc import Iterator

import psycopg2
import pymysql
import pytest

PG = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}
MY = {"host": "127.0.0.1", "port": 3306, "database": "test", "user": "root"}


SERVICES_HINT = "start the test servers with `scripts/services.sh up` (see README, Set-up)"


def pg_connect(**overrides):
    """A psycopg2 connection to the test database; fails the test, naming the script, if down."""
    options = {"host": PG["host"], "port": PG["port"], "user": PG["user"], "dbname": PG["database"]}
    options = {**options, "connect_timeout": 10, **overrides}
    try:
        return psycopg2.connect(**options)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0]
        pytest.fail(
            f"PostgreSQL on {PG['host']}:{PG['port']} is not reachable ({first}): {SERVICES_HINT}"
        )


def my_connect(**overrides):
    """A PyMySQL connection to the test database; fails the test, naming the script, if down."""
    options = {"host": MY["host"], "port": MY["port"], "user": MY["user"], "password": ""}
    options = {**options, "database": MY["database"], "connect_timeout": 10, **overrides}
    try:
        return pymysql.connect(**options)
    except pymysql.err.OperationalError as exc:
        pytest.fail(
            f"MariaDB on {MY['host']}:{MY['port']} is not reachable ({exc}): {SERVICES_HINT}"
        )


def unique_table(prefix: str = "t") -> str:
    """Return a table name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def pg_connection() -> Iterator:
    """An autocommit psycopg2 connection to the test database."""
    connection = pg_connect()
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


def pg(sql: str, params=None) -> list[tuple]:
    """Run one statement on PostgreSQL; return its rows (empty for statements without)."""
    with pg_connection() as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def my_connection() -> Iterator:
    """An autocommit PyMySQL connection to the test database."""
    connection = my_connect(autocommit=True)
    try:
        yield connection
    finally:
        connection.close()


def my(sql: str, params=None) -> list[tuple]:
    """Run one statement on MariaDB; return its rows."""
    with my_connection() as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
