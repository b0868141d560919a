"""SQLite source and sink (standard library `sqlite3`): the embedded default database.

Reads run key ranges on read-only connections. Writes stage bundles as Arrow IPC files; one
publish step loads them into a staging table and applies the mode in a single transaction,
recorded in a ledger table so that re-publishing the same run id is a no-op (see
`beam_etl.io.sql`: SQLite is a dialect of the loader every database shares).
"""

import uuid

from beam_etl.core.publish import new_run_id
from beam_etl.io._files import staging_dir
from beam_etl.io.sql import read
from beam_etl.io.sql.identifiers import check_identifier
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.sink import WriteToDatabase
from beam_etl.io.sql.sqlite import READER, SQLITE

__all__ = ["ReadFromSqlite", "WriteToSqlite"]


class WriteToSqlite(WriteToDatabase):
    """Write record batches to a table in an SQLite database file.

    All rows become visible in one transaction after every bundle has finished; a failed run
    leaves the table as it was. `replace` swaps in the new content at once; `append` adds rows;
    `merge` replaces the rows of the loaded keys (`hard_delete_column` true deletes them);
    `insert_only` adds rows whose key is not there yet; `scd2` keeps every version of a row
    (`valid_from`, `valid_to`, `is_current`, `row_hash`; see `beam_etl.io._scd2`). The keyed
    modes keep one row per key of a load (the last; for `insert_only` the first).
    Re-publishing a run id already recorded in the `_beam_etl_runs` ledger changes nothing.
    New columns of the load are added to the table (nullable; see `schema_drift`). A row
    SQLite refuses (a NOT NULL, UNIQUE or CHECK constraint of an existing table, a null key)
    fails the run, naming its origin file and line, and nothing is published; with
    `on_reject: dead_letter` it is a `db_constraint` dead letter on the `error` output
    instead (the others are loaded), as in `WriteToPostgres` and `WriteToMySql`.
    Output: one element, the number of rows written (`WithErrors(written, error)` with
    `on_reject: dead_letter`).
    """

    OUTPUTS: tuple[str, ...] = ()  # set per instance: `("error",)` with `on_reject: dead_letter`
    DIALECT = SQLITE

    def __init__(
        self,
        database: str,
        table: str,
        *,
        mode: str = "replace",
        primary_key: list[str] | str | None = None,
        hard_delete_column: str | None = None,
        run_id: str | None = None,
        on_reject: str = "fail",
        schema_drift: str = "evolve",
    ) -> None:
        """Args:
        database: path of the SQLite file (created with its folders when missing).
        table: target table name (letters, digits, `_`).
        mode: `replace` (default), `append`, `merge`, `insert_only` or `scd2`.
        primary_key: key column(s); needed by `merge`, `insert_only` and `scd2`, and made
            the table's primary key when a load creates it.
        hard_delete_column: boolean column; in `merge`, rows where it is true delete their
            key (in `scd2`, close its current version).
        run_id: the run recorded in the ledger; a fresh id when not given.
        on_reject: `fail` (default: a refused row fails the run) or `dead_letter` (refused
            rows leave through the `error` output, which the spec then reads).
        schema_drift: `evolve` (default: add the load's new columns, nullable), `freeze`
            (fail, listing them) or `discard_columns` (drop columns the table lacks).
        """
        super().__init__()
        check_identifier(table, "table name")
        options = SinkOptions.create(
            table, mode, primary_key, hard_delete_column, None, True, schema_drift, on_reject,
            run_id or new_run_id(), False,
        )  # fmt: skip
        config = DbConfig(dialect="sqlite", database=database, retries=3)
        self._setup_write(table, config, options, None)
        self.database = database
        self.primary_key = list(options.keys)
        self.hard_delete_column = hard_delete_column
        if on_reject == "dead_letter":
            self.OUTPUTS = ("error",)

    def expand(self, batches):
        result = super().expand(batches)
        # With `on_reject: fail` refused rows fail the run: the dead-letter output stays empty
        # and is not one (a spec's sink keeps no output).
        return result if self.OUTPUTS else result.output

    def _staging_folder(self) -> str:
        return staging_dir(self.database, f"{self.table}-{uuid.uuid4().hex[:12]}")


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

    DIALECT = READER

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
        batch_rows: int | None = None,
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
        batch_rows: rows per output batch; none (the default): batches of about 8 MiB, sized
            by the rows' measured width (`beam_etl.core.batching`).
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
