"""SQLite as a dialect of the shared loader and key-range reader (standard library `sqlite3`):
the embedded default. Everything standard comes from `BaseDialect`; this is what differs.

Writes: DDL is transactional, one `BEGIN IMMEDIATE` transaction holds the whole publish.
Dates, timestamps and decimals are stored as exact ISO / decimal text, booleans as 0 / 1;
`replace` swaps in a table of the load's columns; `merge` replaces the loaded keys' rows as a
whole. Reads: read-only connections, and the Arrow types of declared column types by SQLite's
affinity rules (a column without one takes its values').
"""

import os
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batching import PYTHON_ROWS
from beam_etl.core.errors import ConnectorError
from beam_etl.io import _scd2
from beam_etl.io.sql import read
from beam_etl.io.sql.dialect import BaseDialect
from beam_etl.io.sql.loader import SqlLoad
from beam_etl.io.sql.options import DbConfig

_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id TEXT NOT NULL, target TEXT NOT NULL, "
    "rows_written INTEGER NOT NULL, published_at TEXT NOT NULL, PRIMARY KEY (run_id, target))"
)
_AFFINITY: Final = (  # SQLite's rules for a declared type, in order, as Arrow types
    ("INT", pa.int64()), ("CHAR", pa.string()), ("CLOB", pa.string()), ("TEXT", pa.string()),
    ("BLOB", pa.binary()), ("REAL", pa.float64()), ("FLOA", pa.float64()),
    ("DOUB", pa.float64()), ("BOOL", pa.bool_()),
)  # fmt: skip


def sqlite_values(batch: pa.RecordBatch) -> Iterator[tuple]:
    """Yield the rows of `batch` as `sqlite3` parameters (temporal and decimal values as text)."""
    columns = []
    for column in batch.columns:
        t = column.type
        if pa.types.is_temporal(t) or pa.types.is_decimal(t) or pa.types.is_dictionary(t):
            column = pc.cast(column, pa.string())
        columns.append(column.to_pylist())
    return zip(*columns)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: another connection holds the database's lock."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class Cursor:
    """An `sqlite3` cursor that takes the `%s` parameters (and `%%`) of the shared SQL."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._cursor = connection.cursor()

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *_: object) -> None:
        self._cursor.close()

    def execute(self, sql: str, params=None) -> None:
        if params:
            sql = sql.replace("%s", "?").replace("%%", "%")
        self._cursor.execute(sql, list(params or ()))

    def __getattr__(self, name: str) -> Any:  # executemany, fetch*, description, rowcount
        return getattr(self._cursor, name)


class Connection:
    """An `sqlite3` connection in autocommit mode whose transactions are explicit; read-only
    (and never creating the file) for reads."""

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        if readonly and not os.path.exists(path):
            raise ConnectorError(f"SQLite database `{path}` does not exist")
        if readonly:
            self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._connection = sqlite3.connect(path, timeout=60, isolation_level=None)

    def cursor(self) -> Cursor:
        return Cursor(self._connection)

    def commit(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("COMMIT")

    def rollback(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def close(self) -> None:
        self._connection.close()


class _Column(NamedTuple):
    """A target column as `PRAGMA table_info` tells it."""

    type: str
    not_null: bool


class SqliteDialect(BaseDialect):
    """SQLite for the shared loader: everything in one transaction, rows staged with
    `executemany`, no bulk fast path, refused rows found by bisection."""

    name = "sqlite"
    title = "SQLite"
    transactional_ddl = True
    arrow_dedupe = False
    check_savepoints = True
    timestamp_type = "TEXT"
    boolean_type = "INTEGER"
    origin_types = ("INTEGER", "INTEGER", "INTEGER")
    screens = False  # dates, times and decimals are stored as exact text
    now = "strftime('%%Y-%%m-%%dT%%H:%%M:%%f+00:00', 'now')"

    def connect(self, config: DbConfig) -> Any:
        return Connection(config.database)

    def sql_type(self, data_type: pa.DataType, *, key: bool = False) -> str:
        declared = super().sql_type(data_type, key=key)
        # A lone `INTEGER` key is an alias of the rowid, which turns a null key into a made-up
        # value whatever NOT NULL says; `INT` has the same affinity and is a plain column.
        return "INT" if key and declared == "INTEGER" else declared

    def can_try(self, config: DbConfig) -> bool:
        return os.path.exists(config.database)  # a trial makes no database file

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def is_row_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def create_ledger(self, connection: Any, ledger: str, *, keep_state: bool) -> None:
        with connection.cursor() as cursor:
            cursor.execute(_LEDGER_DDL.format(ledger=ledger))

    def lock(self, cursor: Any, table: str) -> None:
        cursor.execute("BEGIN IMMEDIATE")  # one writer at a time, from the ledger check on

    def describe(self, load: SqlLoad, relation: str) -> dict[str, Any]:
        load.execute(f"PRAGMA table_info({relation})")
        return {row[1]: _Column(row[2], bool(row[3])) for row in load.cursor.fetchall()}

    def unique_keys(self, load: SqlLoad, dest: str) -> list[tuple[str, frozenset[str], list[str]]]:
        load.execute(f"PRAGMA index_list({dest})")
        indexes = [(row[1], row[4]) for row in load.cursor.fetchall() if row[2]]
        keys = []
        for index, partial in indexes:
            load.execute(f"PRAGMA index_info({self.quote(index)})")
            columns = [row[2] for row in sorted(load.cursor.fetchall())]
            plain = not partial and None not in columns
            keys.append((index, frozenset(columns if plain else ["?"]), columns))
        return keys

    def stage_rows(self, load: SqlLoad, stage: str, schema: pa.Schema, batches) -> None:
        names = ", ".join(self.quote(n) for n in schema.names)
        sql = f"INSERT INTO {stage} ({names}) VALUES ({', '.join('?' * len(schema))})"
        for batch in batches:
            load.cursor.executemany(sql, sqlite_values(batch))

    def history_options(self, load: SqlLoad, types) -> dict[str, Any]:
        return {"at": f"'{_scd2.version_time()}'"}  # timestamps are ISO text


SQLITE: Final = SqliteDialect()


def arrow_type(declared: str | None) -> pa.DataType | None:
    """Return the Arrow type of a declared SQLite column type (None: no declared type)."""
    upper = (declared or "").upper()
    return next((data_type for part, data_type in _AFFINITY if part in upper), None)


class _Reader(read.Dialect):
    """SQLite for the shared key-range reader: a read-only connection per range."""

    name = "sqlite"

    def connect(self, config: DbConfig) -> Any:
        return Connection(config.database, readonly=True)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def read(self, connection, sql, params, source, sizer) -> Iterator[pa.RecordBatch]:
        declared = self._declared(connection, sql, params)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            names = [d[0] for d in cursor.description]
            while rows := cursor.fetchmany(min(sizer.rows(), PYTHON_ROWS)):
                arrays = [
                    _to_arrow(values, declared.get(name), name, source)
                    for values, name in zip(zip(*rows), names)
                ]
                yield pa.RecordBatch.from_arrays(arrays, names=names)

    def describe(self, connection, sql, source) -> pa.Schema:
        declared = self._declared(connection, sql, [])
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({sql}) AS d LIMIT 0")
            names = [d[0] for d in cursor.description]
        return pa.schema([(n, declared.get(n) or pa.string()) for n in names])

    @staticmethod
    def _declared(connection, sql: str, params) -> dict[str, pa.DataType]:
        """Return the Arrow types of the result's columns that have a declared type (those
        read straight from a table column), through a temporary view of the query."""
        if params:
            return {}  # a view cannot take parameters: types come from the values
        view = f"_beam_etl_describe_{uuid.uuid4().hex[:12]}"
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMP VIEW {view} AS {sql.replace('%%', '%')}")
            cursor.execute(f"PRAGMA temp.table_info({view})")
            found = {row[1]: arrow_type(row[2]) for row in cursor.fetchmany(10_000)}
            cursor.execute(f"DROP VIEW temp.{view}")
        return {name: t for name, t in found.items() if t is not None}


def _to_arrow(values: tuple, declared: pa.DataType | None, name: str, source: str) -> pa.Array:
    if declared is None:  # an expression: its values' own type (integers, floats or text)
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int}:
            declared = pa.int64()
        elif kinds <= {int, float}:
            declared = pa.float64()
        elif kinds <= {bytes}:
            declared = pa.binary()
        else:
            return pa.array([None if v is None else str(v) for v in values], pa.string())
    if pa.types.is_boolean(declared) and all(v in (0, 1, None) for v in values):
        values = tuple(None if v is None else bool(v) for v in values)  # stored as 0 / 1
    try:
        return pa.array(values, declared)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        bad = next(v for v in values if v is not None and not _fits(v, declared))
        raise ConnectorError(
            f"Column `{name}` of `{source}` is declared {declared} but holds {bad!r} "
            f"({type(bad).__name__}); read it with a `query` that casts it"
        ) from None


def _fits(value: Any, data_type: pa.DataType) -> bool:
    try:
        pa.array([value], data_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True


READER: Final = _Reader()
