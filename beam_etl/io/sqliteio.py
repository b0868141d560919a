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

from beam_etl.io._files import (
    Part,
    StageAndPublish,
    discard_folder,
    new_run_id,
    staging_dir,
)
from beam_etl.io._ipcparts import IpcPartWriter, parts_schema, read_parts
from beam_etl.io._sql import LEDGER_TABLE, check_identifier, quote_identifier

MODES: Final = ("replace", "append")


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
    def __init__(self, database: str, table: str, mode: str, folder: str, run_id: str) -> None:
        self.database = database
        self.table = table
        self.mode = mode
        self.folder = folder
        self.run_id = run_id

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
                self._load(connection, parts)
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

    def _load(self, connection: sqlite3.Connection, parts: list[Part]) -> None:
        schema = parts_schema(parts) if parts else None
        target = quote_identifier(self.table)
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        if schema is None:  # no rows at all: an empty target still reflects the run
            if self.mode == "replace" and exists:
                connection.execute(f"DELETE FROM {target}")
            return
        stage_name = f"_beam_etl_stage_{uuid.uuid4().hex[:12]}"
        stage = quote_identifier(stage_name)
        columns = ", ".join(f"{quote_identifier(f.name)} {sqlite_type(f.type)}" for f in schema)
        connection.execute(f"CREATE TABLE {stage} ({columns})")
        names = ", ".join(quote_identifier(f.name) for f in schema)
        marks = ", ".join("?" * len(schema))
        insert = f"INSERT INTO {stage} ({names}) VALUES ({marks})"
        for batch in read_parts(parts, schema):  # conformed: missing columns are null
            connection.executemany(insert, _to_sqlite_values(batch))
        if self.mode == "replace" or not exists:
            connection.execute(f"DROP TABLE IF EXISTS {target}")
            connection.execute(f"ALTER TABLE {stage} RENAME TO {quote_identifier(self.table)}")
        else:
            connection.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {stage}")
            connection.execute(f"DROP TABLE {stage}")


class WriteToSqlite(beam.PTransform):
    """Write record batches to a table in an SQLite database file.

    All rows become visible in one transaction after every bundle has finished; a failed run
    leaves the table as it was. `replace` swaps in the new content at once; `append` adds rows.
    Re-publishing a run id already recorded in the `_beam_etl_runs` ledger changes nothing.
    Output: one element, the number of rows written.
    """

    def __init__(
        self,
        database: str,
        table: str,
        *,
        mode: str = "replace",
        run_id: str | None = None,
    ) -> None:
        """Args:
        database: path of the SQLite file (created with its folders when missing).
        table: target table name (letters, digits, `_`).
        mode: `replace` (default) or `append`.
        run_id: the run recorded in the ledger; a fresh id when not given.
        """
        super().__init__()
        check_identifier(table, "table name")
        if mode not in MODES:
            raise ValueError(f"Unknown mode `{mode}`; use one of {', '.join(MODES)}")
        self.database = database
        self.table = table
        self.mode = mode
        self.run_id = run_id or new_run_id()
        self.gates: tuple = ()  # set by the spec builder: quality checks that must pass first

    def expand(self, batches):
        self.staging = folder = staging_dir(self.database, f"{self.table}-{uuid.uuid4().hex[:12]}")
        return batches | StageAndPublish(
            IpcPartWriter,
            folder,
            _PublishSqlite(self.database, self.table, self.mode, folder, self.run_id),
            step=self.label,
            gates=self.gates,
        )
