"""SQLite for the shared key-range reader: read-only connections, and the Arrow types of
declared column types by SQLite's affinity rules (a column without one takes its values')."""

import os
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.errors import ConnectorError
from beam_etl.io.sql import read
from beam_etl.io.sql.options import DbConfig

_AFFINITY: Final = (  # SQLite's rules for a declared type, in order, as Arrow types
    ("INT", pa.int64()),
    ("CHAR", pa.string()),
    ("CLOB", pa.string()),
    ("TEXT", pa.string()),
    ("BLOB", pa.binary()),
    ("REAL", pa.float64()),
    ("FLOA", pa.float64()),
    ("DOUB", pa.float64()),
    ("BOOL", pa.bool_()),
)


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

    def executemany(self, sql: str, rows: Any) -> None:
        self._cursor.executemany(sql, rows)

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchmany(self, size: int):
        return self._cursor.fetchmany(size)

    def fetchall(self) -> list:
        return self._cursor.fetchall()

    @property
    def description(self):
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class _Connection:
    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise ConnectorError(f"SQLite database `{path}` does not exist")
        self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)

    def cursor(self) -> Cursor:
        return Cursor(self._connection)

    def close(self) -> None:
        self._connection.close()


def arrow_type(declared: str | None) -> pa.DataType | None:
    """Return the Arrow type of a declared SQLite column type (None: no declared type)."""
    upper = (declared or "").upper()
    for part, data_type in _AFFINITY:
        if part in upper:
            return data_type
    return None


class _Sqlite(read.Dialect):
    """SQLite for the shared key-range reader: a read-only connection per range."""

    name = "sqlite"

    def connect(self, config: DbConfig) -> Any:
        return _Connection(config.database)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def read(self, connection, sql, params, source, batch_rows) -> Iterator[pa.RecordBatch]:
        declared = self._declared(connection, sql, params)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            names = [d[0] for d in cursor.description]
            while rows := cursor.fetchmany(batch_rows):
                columns = list(zip(*rows))
                arrays = [
                    _to_arrow(values, declared.get(name), name, source)
                    for values, name in zip(columns, names)
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


READER: Final = _Sqlite()
