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
from typing import Final

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.io import _scd2
from beam_etl.io._files import (
    Part,
    StageAndPublish,
    discard_folder,
    new_run_id,
    staging_dir,
)
from beam_etl.io._ipcparts import IpcPartWriter, parts_schema, read_parts
from beam_etl.io._sql import LEDGER_TABLE, check_identifier, quote_identifier

MODES: Final = ("replace", "append", "merge", "insert_only", "scd2")
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
