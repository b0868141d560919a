"""The database servers the connector tests need must be reachable: fail, never skip."""

import psycopg2
import pymysql


def test_postgresql_is_reachable():
    connection = psycopg2.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=10
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    connection.close()


def test_mariadb_is_reachable():
    connection = pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", database="test", connect_timeout=10
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    connection.close()
