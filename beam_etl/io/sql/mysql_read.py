"""MySQL / MariaDB connections (PyMySQL, sessions in UTC) and their transient failures, the
Arrow types result columns are read as, and the key-range reader's queries: an unbuffered cursor
in a REPEATABLE READ transaction started WITH CONSISTENT SNAPSHOT.
"""

import dataclasses
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batching import PYTHON_ROWS
from beam_etl.core.config import Secret
from beam_etl.core.errors import ConnectorError
from beam_etl.io.sql import read
from beam_etl.io.sql.options import DbConfig, make_config
from beam_etl.io.sql.retry import with_retries

_DSN_SCHEMES: Final = ("mysql", "mariadb", "mysql+pymysql")
_TRANSIENT: Final = frozenset({1053, 1205, 1213, 1927, 2003, 2006, 2013, 2055, 4031})
_INTEGER: Final = {1: 8, 2: 16, 9: 32, 3: 32, 8: 64, 13: 16}  # FIELD_TYPE -> bits


def connect(config: DbConfig) -> Any:
    """Return a PyMySQL connection (retried while the failure is transient), session in UTC."""
    import pymysql

    def attempt():
        if config.dsn is not None:
            raise ConnectorError("MySQL connections take host, port, database and user, not a DSN")
        connection = pymysql.connect(
            host=config.host,
            port=config.port,
            user=config.user,
            password=config.password.reveal(),
            database=config.database,
            connect_timeout=config.connect_timeout,
            local_infile=True,
            autocommit=True,
            charset="utf8mb4",
        )
        with connection.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            if config.statement_timeout is not None:
                cursor.execute("SELECT VERSION()")
                if "mariadb" in cursor.fetchone()[0].lower():
                    timeout = f"max_statement_time = {config.statement_timeout:f}"
                else:  # MySQL limits SELECTs only, in milliseconds
                    timeout = f"max_execution_time = {round(config.statement_timeout * 1000)}"
                cursor.execute(f"SET SESSION {timeout}")
        return connection

    return with_retries(attempt, config=config, is_transient=is_transient, what="Connecting")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: deadlocks, lock wait timeouts, lost, killed or refused
    connections.

    A connection killed while PyMySQL sends a `LOAD DATA LOCAL` file surfaces as an
    `AttributeError` raised inside PyMySQL (it writes to the socket it has just dropped):
    that is a lost connection too.
    """
    import pymysql

    if isinstance(exc, AttributeError) and "NoneType" in str(exc):
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        module = frame.tb_frame.f_globals.get("__name__", "") if frame else ""
        return module.startswith("pymysql.")
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return code in _TRANSIENT or isinstance(exc, pymysql.err.InterfaceError)


def arrow_type(field: Any) -> pa.DataType:
    """Return the Arrow type a MySQL result column (a PyMySQL field) is read as."""
    code, unsigned = field.type_code, bool(field.flags & 32)
    if code == 1 and field.length == 1:
        return pa.bool_()  # BOOLEAN is TINYINT(1)
    if code in _INTEGER:
        bits = _INTEGER[code]
        return pa.type_for_alias(f"{'u' if unsigned else ''}int{bits}")
    if code in (0, 246):
        precision = field.length - (1 if field.scale else 0) - (0 if unsigned else 1)
        make = pa.decimal128 if precision <= 38 else pa.decimal256
        return make(precision, field.scale)
    if code in (4, 5):
        return pa.float32() if code == 4 else pa.float64()
    if code == 10:
        return pa.date32()
    if code in (7, 12):
        return pa.timestamp("us")  # TIMESTAMP is read in the session zone, UTC
    if code in (249, 250, 251, 252, 253, 254) and field.charsetnr == 63:
        return pa.binary()
    return pa.string()  # text, JSON, ENUM, SET, TIME, ...


class _MySql(read.Dialect):
    """Reads with an unbuffered cursor in a REPEATABLE READ transaction WITH CONSISTENT
    SNAPSHOT."""

    name = "mysql"

    def connect(self, config: DbConfig) -> Any:
        return connect(config)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def read(self, connection, sql, params, source, sizer) -> Iterator[pa.RecordBatch]:
        import pymysql

        with connection.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        with connection.cursor(pymysql.cursors.SSCursor) as cursor:
            cursor.execute(sql, params or None)  # no `%` formatting without parameters
            schema = self._schema(cursor, source)
            while rows := cursor.fetchmany(min(sizer.rows(), PYTHON_ROWS)):
                columns = list(zip(*rows))
                yield pa.RecordBatch.from_arrays(
                    [_to_arrow(column, t) for column, t in zip(columns, schema.types)],
                    schema=schema,
                )
        connection.rollback()

    def describe(self, connection, sql, source) -> pa.Schema:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({sql}) AS d LIMIT 0")
            return self._schema(cursor, source)

    def integer_key(self, connection, table: str) -> tuple[str, int] | None:
        schema, _, name = table.rpartition(".")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.COLUMN_NAME, c.DATA_TYPE, t.TABLE_ROWS FROM information_schema.COLUMNS c "
                "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA "
                "AND t.TABLE_NAME = c.TABLE_NAME WHERE c.TABLE_SCHEMA = COALESCE(%s, DATABASE()) "
                "AND c.TABLE_NAME = %s AND c.COLUMN_KEY = 'PRI'",
                (schema or None, name),
            )
            key = cursor.fetchall()
        integers = ("tinyint", "smallint", "mediumint", "int", "bigint")
        if len(key) != 1 or key[0][1].lower() not in integers:
            return None  # no key, a composite one, or not an integer
        return key[0][0], int(key[0][2] or 0)

    @staticmethod
    def _schema(cursor, source: str) -> pa.Schema:
        fields = cursor._result.fields  # charset and flags tell binary and unsigned apart
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ConnectorError(f"The query of `{source}` repeats column names")
        return pa.schema([(f.name, arrow_type(f)) for f in fields])


def _to_arrow(values: tuple, data_type: pa.DataType) -> pa.Array:
    if pa.types.is_boolean(data_type):  # TINYINT(1) arrives as 0/1
        return pc.cast(pa.array(values, pa.int8()), data_type)
    return pa.array(values, data_type)


def config(
    host, port, database, user, password_env, connect_timeout, statement_timeout, dsn, dsn_env
):
    """Return MySQL connection settings. A DSN (`mysql://user:password@host:port/database`,
    also `mariadb://`) is split into them here (PyMySQL takes none); its password stays a
    `Secret`, and it overrides the separate keys it gives.

    Raises:
        ValueError: a DSN that does not look like one (the DSN itself is not repeated).
    """
    timeouts = (connect_timeout, statement_timeout)
    settings = make_config(
        "mysql", dsn, dsn_env, host, port, database, user, password_env, *timeouts
    )
    if settings.dsn is None:
        return settings
    parts = urllib.parse.urlsplit(settings.dsn.reveal())
    try:
        given_port = parts.port
    except ValueError:
        given_port = -1
    if parts.scheme not in _DSN_SCHEMES or not parts.hostname or given_port == -1:
        raise ValueError("`dsn` must look like mysql://user:password@host:port/database")
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return dataclasses.replace(
        settings,
        dsn=None,
        host=parts.hostname,
        port=given_port or port,
        user=urllib.parse.unquote(parts.username) if parts.username else user,
        password=Secret(password) if password is not None else settings.password,
        database=urllib.parse.unquote(parts.path.lstrip("/")) or settings.database,
    )


READER: Final = _MySql()
