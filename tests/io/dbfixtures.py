"""Helpers for the database connector tests: real servers, unique tables dropped afterwards.

The servers must be reachable: a test that cannot connect fails, it never skips.
"""

import contextlib
import uuid
from collections.abc import Iterator

import psycopg2
import pymysql

PG = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}
MY = {"host": "127.0.0.1", "port": 3306, "database": "test", "user": "root"}


def unique_table(prefix: str = "t") -> str:
    """Return a table name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def pg_connection() -> Iterator:
    """An autocommit psycopg2 connection to the test database."""
    connection = psycopg2.connect(
        host=PG["host"], port=PG["port"], user=PG["user"], dbname=PG["database"], connect_timeout=10
    )
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
    connection = pymysql.connect(
        host=MY["host"],
        port=MY["port"],
        user=MY["user"],
        password="",
        database=MY["database"],
        connect_timeout=10,
        autocommit=True,
    )
    try:
        yield connection
    finally:
        connection.close()


def my(sql: str, params=None) -> list[tuple]:
    """Run one statement on MariaDB; return its rows."""
    with my_connection() as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
