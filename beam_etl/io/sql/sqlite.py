"""SQLite as a dialect of the shared loader (standard library `sqlite3`): the embedded default.

DDL is transactional: one `BEGIN IMMEDIATE` transaction holds the whole publish. Dates,
timestamps and decimals are stored as exact ISO / decimal text, booleans as 0 / 1; `replace`
swaps in a table of the load's columns; `merge` replaces the loaded keys' rows as a whole.
"""

import os
import sqlite3
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.io import _scd2
from beam_etl.io.sql.dialect import NamedDialect, Part
from beam_etl.io.sql.loader import SqlLoad
from beam_etl.io.sql.options import DbConfig
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.sqlite_read import Cursor
from beam_etl.io.sql.staging import ROW_COLUMN

_CHUNK: Final = 500  # row numbers per IN list (SQLite takes at most 999 parameters)
_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id TEXT NOT NULL, target TEXT NOT NULL, "
    "rows_written INTEGER NOT NULL, published_at TEXT NOT NULL, PRIMARY KEY (run_id, target))"
)


def sqlite_values(batch: pa.RecordBatch) -> Iterator[tuple]:
    """Yield the rows of `batch` as `sqlite3` parameters (temporal and decimal values as text)."""
    columns = []
    for column in batch.columns:
        t = column.type
        if pa.types.is_temporal(t) or pa.types.is_decimal(t) or pa.types.is_dictionary(t):
            column = pc.cast(column, pa.string())
        columns.append(column.to_pylist())
    return zip(*columns)


class Connection:
    """An `sqlite3` connection in autocommit mode whose transactions are explicit."""

    def __init__(self, path: str) -> None:
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


class _Column:
    """A target column as `PRAGMA table_info` tells it."""

    def __init__(self, type_: str, not_null: bool) -> None:
        self.type, self.not_null = type_, not_null


def _failed(constraint: str, table: str, columns: list[str]) -> str:
    """Return SQLite's message for a failed constraint, as an SQL literal."""
    shown = ", ".join(f"{table}.{c}" for c in columns)
    return "'" + f"{constraint} constraint failed: {shown}".replace("'", "''") + "'"


class SqliteDialect(NamedDialect):
    """SQLite for the shared loader: everything in one transaction, rows staged with
    `executemany`, no bulk fast path, refused rows found by bisection."""

    name = "sqlite"
    title = "SQLite"
    transactional_ddl = True
    arrow_dedupe = False
    check_savepoints = True
    timestamp_type = "TEXT"
    boolean_type = "INTEGER"
    table_options = ""
    origin_types = ("INTEGER", "INTEGER", "INTEGER")
    screens = False  # dates, times and decimals are stored as exact text
    now = "strftime('%%Y-%%m-%%dT%%H:%%M:%%f+00:00', 'now')"

    def connect(self, config: DbConfig) -> Any:
        return Connection(config.database)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def is_row_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def create_ledger(self, connection: Any, ledger: str, *, keep_state: bool) -> None:
        with connection.cursor() as cursor:
            cursor.execute(_LEDGER_DDL.format(ledger=ledger))

    def lock(self, cursor: Any, table: str) -> None:
        cursor.execute("BEGIN IMMEDIATE")  # one writer at a time, from the ledger check on

    def start(self, load: SqlLoad) -> None:
        pass

    def columns(self, load: SqlLoad) -> dict[str, str] | None:
        found = {name: column.type for name, column in self.describe(load, load.target).items()}
        return found or None  # no columns: no table

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

    def empty_target(self, load: SqlLoad) -> None:
        load.execute(f"DELETE FROM {load.target}")

    def new_like(self, load: SqlLoad) -> str:
        """Create the replacement: a table of the load's columns, as `replace` always made."""
        new = self.quote(f"_beam_etl_new_{load.token}")
        columns = ", ".join(f"{self.quote(n)} {self.sql_type(t)}" for n, t in load.loaded.items())
        load.execute(f"CREATE TABLE {new} ({columns})")
        return new

    def swap(self, load: SqlLoad, new: str, result: Published | None = None) -> None:
        load.execute(f"DROP TABLE {load.target}")
        load.execute(f"ALTER TABLE {new} RENAME TO {self.quote(load.table)}")

    def predict(self, load: SqlLoad, parts: list[Part]) -> Published | None:
        return None  # the trial loads: it is a local file

    def fast(self, load: SqlLoad, parts, fields, columns, existed: bool) -> Published | None:
        return None  # no bulk path to take: staging is the load

    def temporary_table_sql(self, name: str, columns: list[str]) -> str:
        return f"CREATE TEMP TABLE {name} ({', '.join(columns)})"

    def stage_rows(self, load: SqlLoad, stage: str, schema: pa.Schema, batches) -> None:
        names = ", ".join(self.quote(n) for n in schema.names)
        sql = f"INSERT INTO {stage} ({names}) VALUES ({', '.join('?' * len(schema))})"
        for batch in batches:
            load.cursor.executemany(sql, sqlite_values(batch))

    def needs_sql_dedupe(self, load: SqlLoad, fields: list[pa.Field]) -> bool:
        return load.mode.keep is not None  # insert_only keeps the first row per key

    def dedupe_sql(self, source, unique, keys, has_null, sort, first) -> str:
        order = f"{self.quote(sort)} DESC, " if sort else ""
        row = self.quote(ROW_COLUMN)
        return (
            f"CREATE TEMP TABLE {unique} AS SELECT * FROM (SELECT s.*, ROW_NUMBER() OVER "
            f"(PARTITION BY {keys} ORDER BY {order}{row} {'ASC' if first else 'DESC'}) "
            f"AS _beam_etl_rank FROM {source} s) WHERE _beam_etl_rank = 1 OR {has_null}"
        )

    def kept(self, flag: str | None) -> str:
        return f"(s.{self.quote(flag)} IS NULL OR NOT s.{self.quote(flag)})" if flag else "1"

    def before_apply(self, load: SqlLoad, source, names, types, kept) -> list[str]:
        return [f"s.{self.quote(n)}" for n in names]

    def _match(self, load: SqlLoad, target: str) -> str:
        q = self.quote
        return " AND ".join(f"{target}.{q(k)} = s.{q(k)}" for k in load.keys)

    def insert_ignore_sql(self, load: SqlLoad, insert: str, dest: str, in_range: str) -> str:
        taken = f"SELECT 1 FROM {dest} t WHERE {self._match(load, 't')}"
        return f"{insert} WHERE {in_range} AND NOT EXISTS ({taken})"

    def upsert_sql(self, load: SqlLoad, insert, dest, source, names, types, in_range, kept):
        """The staged keys' rows are replaced (or deleted) as a whole."""
        matched = f"SELECT 1 FROM {source} s WHERE {self._match(load, dest)} AND {in_range}"
        return [
            f"DELETE FROM {dest} WHERE EXISTS ({matched})",
            f"{insert} WHERE {in_range} AND {kept}",
        ]

    def history_options(self, load: SqlLoad, types) -> dict[str, Any]:
        return {"at": f"'{_scd2.version_time()}'"}

    def begin(self, load: SqlLoad) -> None:
        pass  # the publish is one transaction already

    def after_statement(self, load: SqlLoad) -> None:
        pass

    def refusal_message(self, load: SqlLoad, exc: BaseException) -> str:
        return str(exc).replace(f"_beam_etl_new_{load.token}", load.table)

    def one_by_one(self, load: SqlLoad, source: str, statements: list[str]) -> None:
        return None  # bisection down to single rows

    def refusal_checks(self, load: SqlLoad, names, types, kept) -> list[tuple[str, str]]:
        return [
            (
                f"s.{self.quote(n)} IS NULL AND {kept}",
                _failed("NOT NULL", load.table, [n]),
            )
            for n in names
            if types[n].not_null
        ]

    def failed_checks(self, load: SqlLoad, source, dest, names, types, kept) -> list[str]:
        return []  # CHECK constraints are left to bisection

    def taken_key(self, load: SqlLoad, source, dest, types, key) -> str:
        _, _, columns = key
        q = self.quote
        named = ", ".join(f"s.{q(c)} AS k{i}" for i, c in enumerate(columns))
        match = " AND ".join(f"t.{q(c)} = v.k{i}" for i, c in enumerate(columns))
        message = _failed("UNIQUE", load.table, columns)
        return (
            f"SELECT v.r, {message} FROM (SELECT s.{q(ROW_COLUMN)} AS r, {named} "
            f"FROM {source} s) AS v WHERE EXISTS (SELECT 1 FROM {dest} t WHERE {match})"
        )

    def only_keys_refuse(self, load: SqlLoad, dest: str) -> bool:
        return False  # triggers and foreign keys are not looked up: bisection decides

    def repeated_key(self, load: SqlLoad, key, types) -> tuple[list[str], str]:
        _, _, columns = key
        return [f"s.{self.quote(c)}" for c in columns], _failed("UNIQUE", load.table, columns)

    def after_prepare(self, load: SqlLoad, source: str) -> None:
        pass

    def row_chunks(self, numbers: list[int]) -> Iterator[tuple[str, Any]]:
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start : start + _CHUNK]
            yield f"IN ({', '.join(['%s'] * len(chunk))})", chunk

    def clean_message(self, message: str) -> str:
        return message


SQLITE: Final = SqliteDialect()
