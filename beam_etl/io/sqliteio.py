"""SQLite sink (standard library `sqlite3`): the embedded default database.

Bundles stage Arrow IPC files; one publish step loads them into a staging table and makes
them visible in a single transaction, recorded in a ledger table so that re-publishing the same
run id is a no-op.
"""

import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.errors import ConnectorError
from beam_etl.io import _scd2
from beam_etl.io._files import (
    Part,
    StageAndPublish,
    discard_folder,
    new_run_id,
    staging_dir,
)
from beam_etl.io._ipcparts import IpcPartWriter, parts_schema, read_parts
from beam_etl.io.sql import read
from beam_etl.io.sql.identifiers import LEDGER_TABLE, check_identifier, quote_identifier
from beam_etl.io.sql.options import DbConfig

MODES: Final = ("replace", "append", "merge", "insert_only", "scd2")
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
_KEYED: Final = ("merge", "insert_only", "scd2")


def sqlite_type(data_type: pa.DataType) -> str:
    """Return the SQLite column type for an Arrow type."""
    if pa.types.is_integer(data_type) or pa.types.is_boolean(data_type):
        return "INTEGER"
    if pa.types.is_floating(data_type):
        return "REAL"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return "BLOB"
    return "TEXT"  # strings, and dates, timestamps and decimals as exact ISO / decimal text


def _to_sqlite_values(batch: pa.RecordBatch) -> Iterator[tuple]:
    columns = []
    for column in batch.columns:
        t = column.type
        if pa.types.is_temporal(t) or pa.types.is_decimal(t) or pa.types.is_dictionary(t):
            column = pc.cast(column, pa.string())
        columns.append(column.to_pylist())
    return zip(*columns)


def _ensure_ledger(connection: sqlite3.Connection) -> None:
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(LEDGER_TABLE)} ("
        "run_id TEXT NOT NULL, target TEXT NOT NULL, rows_written INTEGER NOT NULL, "
        "published_at TEXT NOT NULL, PRIMARY KEY (run_id, target))"
    )


class _PublishSqlite:
    def __init__(
        self,
        database: str,
        table: str,
        mode: str,
        folder: str,
        run_id: str,
        keys: list[str] | None = None,
        flag: str | None = None,
    ) -> None:
        self.database = database
        self.table = table
        self.mode = mode
        self.folder = folder
        self.run_id = run_id
        self.keys = keys or []
        self.flag = flag

    def prepare(self, parts: list[Part]) -> None:
        """Try the load in a transaction that is rolled back: a load that would fail fails
        the run before anything is published (a database file not there yet is not made)."""
        if os.path.exists(self.database):
            self._transaction(parts, commit=False)

    def __call__(self, parts: list[Part]) -> int:
        rows = self._transaction(parts, commit=True)
        discard_folder(self.folder)
        return rows

    def _transaction(self, parts: list[Part], *, commit: bool) -> int:
        rows = sum(count for _, count in parts)
        os.makedirs(os.path.dirname(os.path.abspath(self.database)), exist_ok=True)
        connection = sqlite3.connect(self.database, timeout=60, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            _ensure_ledger(connection)
            done = connection.execute(
                f"SELECT rows_written FROM {quote_identifier(LEDGER_TABLE)} "
                "WHERE run_id = ? AND target = ?",
                (self.run_id, self.table),
            ).fetchone()
            if done is None:
                rows = self._load(connection, parts, rows)
                connection.execute(
                    f"INSERT INTO {quote_identifier(LEDGER_TABLE)} VALUES (?, ?, ?, ?)",
                    (self.run_id, self.table, rows, datetime.now(UTC).isoformat()),
                )
            connection.execute("COMMIT" if commit else "ROLLBACK")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()
        return rows

    def _load(self, connection: sqlite3.Connection, parts: list[Part], rows: int) -> int:
        """Load `parts` in the mode; return the rows written."""
        schema = parts_schema(parts) if parts else None
        target = quote_identifier(self.table)
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        if schema is None:  # no rows at all: an empty target still reflects the run
            if self.mode == "replace" and exists:
                connection.execute(f"DELETE FROM {target}")
            return 0
        stage_name = f"_beam_etl_stage_{uuid.uuid4().hex[:12]}"
        stage = quote_identifier(stage_name)
        columns = ", ".join(f"{quote_identifier(f.name)} {sqlite_type(f.type)}" for f in schema)
        connection.execute(f"CREATE TABLE {stage} ({columns})")
        names = ", ".join(quote_identifier(f.name) for f in schema)
        marks = ", ".join("?" * len(schema))
        insert = f"INSERT INTO {stage} ({names}) VALUES ({marks})"
        for batch in read_parts(parts, schema):  # conformed: missing columns are null
            connection.executemany(insert, _to_sqlite_values(batch))
        if self.mode in _KEYED:
            written = self._keyed(connection, stage, target, schema, exists)
            connection.execute(f"DROP TABLE {stage}")
            return written
        if self.mode == "replace" or not exists:
            connection.execute(f"DROP TABLE IF EXISTS {target}")
            connection.execute(f"ALTER TABLE {stage} RENAME TO {quote_identifier(self.table)}")
        else:
            connection.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {stage}")
            connection.execute(f"DROP TABLE {stage}")
        return rows

    def _keyed(self, connection, stage: str, target: str, schema: pa.Schema, exists) -> int:
        """Apply `merge`, `insert_only` or `scd2` from `stage` (one row per key kept: the
        last, or for `insert_only` the first); return the rows written."""
        q = quote_identifier
        keys = ", ".join(q(k) for k in self.keys)
        pick = "min" if self.mode == "insert_only" else "max"
        connection.execute(
            f"DELETE FROM {stage} WHERE rowid NOT IN "
            f"(SELECT {pick}(rowid) FROM {stage} GROUP BY {keys})"
        )
        load = [f for f in schema if f.name != self.flag]
        if not exists:
            columns = [f"{q(f.name)} {sqlite_type(f.type)}" for f in load]
            primary = list(self.keys)
            if self.mode == "scd2":
                columns += _scd2.extra_columns(q, "TEXT", "INTEGER")
                primary.append(_scd2.VALID_FROM)
            columns.append(f"PRIMARY KEY ({', '.join(q(k) for k in primary)})")
            connection.execute(f"CREATE TABLE {target} ({', '.join(columns)})")
        names = [f.name for f in load]
        listed = ", ".join(q(n) for n in names)
        match = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in self.keys)
        kept = f"(s.{q(self.flag)} IS NULL OR NOT s.{q(self.flag)})" if self.flag else "1"
        if self.mode == "scd2":
            statements = _scd2.statements(
                q,
                dest=target,
                source=stage,
                names=names,
                values=[f"s.{q(n)}" for n in names],
                keys=self.keys,
                flag=self.flag,
                in_range="1",
                at=f"'{_scd2.version_time()}'",
            )
        elif self.mode == "insert_only":
            statements = [
                f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {stage} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {match})"
            ]
        else:  # merge: the staged keys' rows are replaced (or deleted) as a whole
            matched = match.replace("t.", f"{target}.")
            statements = [
                f"DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {stage} s WHERE {matched})",
                f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {stage} s WHERE {kept}",
            ]
        written = 0
        for sql in statements:
            written = connection.execute(sql).rowcount
        return written


class WriteToSqlite(beam.PTransform):
    """Write record batches to a table in an SQLite database file.

    All rows become visible in one transaction after every bundle has finished; a failed run
    leaves the table as it was. `replace` swaps in the new content at once; `append` adds rows;
    `merge` replaces the rows of the loaded keys (`hard_delete_column` true deletes them);
    `insert_only` adds rows whose key is not there yet; `scd2` keeps every version of a row
    (`valid_from`, `valid_to`, `is_current`, `row_hash`; see `beam_etl.io._scd2`). The keyed
    modes keep one row per key of a load (the last; for `insert_only` the first).
    Re-publishing a run id already recorded in the `_beam_etl_runs` ledger changes nothing.
    Output: one element, the number of rows written.
    """

    def __init__(
        self,
        database: str,
        table: str,
        *,
        mode: str = "replace",
        primary_key: list[str] | str | None = None,
        hard_delete_column: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Args:
        database: path of the SQLite file (created with its folders when missing).
        table: target table name (letters, digits, `_`).
        mode: `replace` (default), `append`, `merge`, `insert_only` or `scd2`.
        primary_key: key column(s); needed by `merge`, `insert_only` and `scd2`, and made
            the table's primary key when these modes create it.
        hard_delete_column: boolean column; in `merge`, rows where it is true delete their
            key (in `scd2`, close its current version).
        run_id: the run recorded in the ledger; a fresh id when not given.
        """
        super().__init__()
        check_identifier(table, "table name")
        if mode not in MODES:
            raise ValueError(f"Unknown mode `{mode}`; use one of {', '.join(MODES)}")
        keys = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
        for key in keys:
            check_identifier(key, "primary_key column")
        if mode in _KEYED and not keys:
            raise ValueError(f"mode `{mode}` needs `primary_key`")
        if hard_delete_column is not None:
            check_identifier(hard_delete_column, "hard_delete_column")
            if mode not in ("merge", "scd2"):
                raise ValueError(
                    f"`hard_delete_column` applies to mode `merge` only (or `scd2`), not `{mode}`"
                )
        self.primary_key = keys
        self.hard_delete_column = hard_delete_column
        self.database = database
        self.table = table
        self.mode = mode
        self.run_id = run_id or new_run_id()
        self.gates: tuple = ()  # set by the spec builder: quality checks that must pass first

    def expand(self, batches):
        self.staging = folder = staging_dir(self.database, f"{self.table}-{uuid.uuid4().hex[:12]}")
        if self.mode == "scd2":
            batches = batches | "RowHash" >> beam.Map(_scd2.with_row_hash, self.hard_delete_column)
        publish = _PublishSqlite(
            self.database,
            self.table,
            self.mode,
            folder,
            self.run_id,
            self.primary_key,
            self.hard_delete_column,
        )
        return batches | StageAndPublish(
            IpcPartWriter,
            folder,
            publish,
            step=self.label,
            gates=self.gates,
        )


class _Cursor:
    """An `sqlite3` cursor that takes the `%s` parameters and `%%` of the shared reader."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._cursor = connection.cursor()

    def __enter__(self) -> "_Cursor":
        return self

    def __exit__(self, *_: object) -> None:
        self._cursor.close()

    def execute(self, sql: str, params=None) -> None:
        if params:
            sql = sql.replace("%s", "?").replace("%%", "%")
        self._cursor.execute(sql, list(params or ()))

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchmany(self, size: int):
        return self._cursor.fetchmany(size)

    @property
    def description(self):
        return self._cursor.description


class _Connection:
    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise ConnectorError(f"SQLite database `{path}` does not exist")
        self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)

    def cursor(self) -> _Cursor:
        return _Cursor(self._connection)

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


class ReadFromSqlite(read.ReadFromDatabase):
    """Read an SQLite table or query into Arrow record batches, in parallel key ranges.

    Read-only connections (the file is never changed or created). Types come from the
    columns' declared types by SQLite's affinity rules (INTEGER as int64, REAL as double,
    TEXT as string, BLOB as binary, BOOLEAN as boolean); a column without one (an
    expression) takes its values' type. Dates and times stay text, as SQLite keeps them (cast
    them downstream). A value that does not fit its declared type fails the read naming the
    column. Batches carry the table (or `query`) as origin. `incremental` reads only what
    changed since the last successful run, as for PostgreSQL and MySQL.
    """

    DIALECT = _Sqlite()

    def __init__(
        self,
        database: str,
        *,
        table: str | None = None,
        query: str | None = None,
        partition_column: str | None = None,
        num_partitions: int = 1,
        lower_bound: int | None = None,
        upper_bound: int | None = None,
        batch_rows: int = 50_000,
        incremental: dict | None = None,
    ) -> None:
        """Args:
        database: path of the SQLite file.
        table: the table to read; or give `query`.
        query: a SELECT whose result to read (trusted SQL from the spec author).
        partition_column: integer column to split the read on.
        num_partitions: number of key ranges (parallel reads).
        lower_bound: smallest key to plan ranges from (queried when not given).
        upper_bound: largest key to plan ranges from (queried when not given).
        batch_rows: rows per output batch.
        incremental: read only what changed since the last successful run:
            `{cursor: updated_at, initial: ..., lag: ..., end: null,
            on_null: exclude | include | reject}` (see README, Incremental loads).
        """
        super().__init__()
        config = DbConfig(dialect="sqlite", database=database, retries=3)
        self._setup_read(
            config,
            table,
            query,
            partition_column,
            num_partitions,
            lower_bound,
            upper_bound,
            batch_rows,
            incremental,
        )
