"""MySQL / MariaDB source and sink on PyMySQL: unbuffered key-range reads, `LOAD DATA LOCAL
INFILE` (or multi-row INSERT) into a temporary staging table, set-based publishing with a ledger.

pymysql decodes the protocol in Python (about 85k rows/s), so large reads should be split with
`partition_column` and read by several workers. DDL commits implicitly in MySQL: a table the
sink creates or evolves stays (empty, or with its new columns) if the publish later fails; the
rows themselves are published in one transaction, and `replace` swaps tables with one atomic
`RENAME TABLE`.
"""

from typing import Final

from beam_etl.core.publish import new_run_id
from beam_etl.io.sql import mysql_read, read
from beam_etl.io.sql.mysql import MYSQL
from beam_etl.io.sql.mysql_read import arrow_type, connect, is_transient
from beam_etl.io.sql.options import SinkOptions
from beam_etl.io.sql.sink import WriteToDatabase

__all__ = ["ReadFromMySql", "WriteToMySql", "arrow_type", "connect", "is_transient"]
_LOAD_METHODS: Final = ("auto", "load_data", "insert")


class ReadFromMySql(read.ReadFromDatabase):
    """Read a MySQL/MariaDB table or query into Arrow record batches, in parallel key ranges.

    Bounded; order is not kept. Streams the result with an unbuffered cursor (bounded memory:
    a batch of about 8 MiB, or `batch_rows` rows, per worker). Each key range is read in its
    own REPEATABLE READ transaction started WITH CONSISTENT SNAPSHOT; different ranges may see
    different moments. Every row is read exactly once when `partition_column` does not change
    during the read.
    Types: integers (TINYINT(1) as boolean), floats, decimals, dates, DATETIME/TIMESTAMP as
    timestamps without zone (TIMESTAMP in UTC), binary strings and blobs as binary; text,
    JSON, ENUM, SET, TIME as strings. Batches carry the table (or `query`) as origin.
    """

    DIALECT = mysql_read.READER

    def __init__(
        self,
        *,
        table: str | None = None,
        query: str | None = None,
        host: str = "127.0.0.1",
        port: int = 3306,
        database: str | None = None,
        user: str = "root",
        password_env: str | None = "MYSQL_PASSWORD",
        dsn: str | None = None,
        dsn_env: str | None = None,
        partition_column: str | None = None,
        num_partitions: int | None = None,
        lower_bound: int | None = None,
        upper_bound: int | None = None,
        batch_rows: int | None = None,
        incremental: dict | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float | None = None,
    ) -> None:
        """Args:
        table: the table to read (`name` or `database.name`); or give `query`.
        query: a SELECT whose result to read (trusted SQL from the spec author).
        host: server host.
        port: server port.
        database: database name.
        user: user name.
        password_env: environment variable holding the password (read at construction).
        dsn: `mysql://user:password@host:port/database` instead of the separate keys (prefer
            `dsn_env`: a DSN holding a password belongs in the environment, not the spec).
        dsn_env: environment variable holding such a DSN.
        partition_column: integer column to split the read on.
        num_partitions: number of key ranges (parallel reads). Unset, a `table` with a
            one-column integer primary key is split on it, a range per ~250,000 rows (the
            server's estimate; at most 16); 1 reads everything in one consistent snapshot.
        lower_bound: smallest key to plan ranges from (queried when not given).
        upper_bound: largest key to plan ranges from (queried when not given).
        batch_rows: rows per output batch; none (the default): batches of about 8 MiB, sized
            by the rows' measured width (`beam_etl.core.batching`).
        incremental: read only what changed since the last successful run:
            `{cursor: updated_at, initial: "2024-01-01", lag: "10m", end: null,
            on_null: exclude | include | reject}` (see README, Incremental loads).
        connect_timeout: seconds to wait for a connection.
        statement_timeout: seconds a statement may run (no limit when not given).
        """
        super().__init__()
        config = mysql_read.config(
            host, port, database, user, password_env, connect_timeout, statement_timeout, dsn,
            dsn_env,
        )  # fmt: skip
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


class WriteToMySql(WriteToDatabase):
    """Write record batches to a MySQL/MariaDB table, all at once, at the end of the run.

    Bundles are staged as local Arrow IPC files; after every bundle has finished one publish
    step loads them into a temporary staging table (`LOAD DATA LOCAL INFILE` where the server
    allows `local_infile`, else multi-row INSERT) and applies `mode` in one transaction:
    `append`, `replace` (a new table swapped in with one atomic `RENAME TABLE`: readers see the
    old or the new content), `merge` (the row with the same `primary_key` is updated, else
    the row inserted; the last row per key, or the one with the highest `dedup_sort`, wins;
    `hard_delete_column` true deletes), `insert_only` (keys already present, or repeated
    within the load, are skipped and counted as dropped: the first row per key is kept),
    `scd2` (history: a changed key's current version is closed and a new one inserted, with
    `valid_from`, `valid_to`, `is_current`, `row_hash`; see `beam_etl.io._scd2`).
    The run is recorded in `_beam_etl_runs`: publishing a recorded run id again changes
    nothing. A lost or killed connection is retried from the start on a new one.

    A value is stored exactly or its row is refused: the session runs in strict mode, and
    rows MySQL would store changed without an error (text cut to its column, trailing spaces
    trimmed, a decimal rounded to its scale or to a whole number, fractional seconds rounded,
    a time of day dropped by a DATE, NaN or infinity, invalid UTF-8, dates outside years 1 to
    9999, nanoseconds) are refused too. Refused rows, like rows a constraint refuses (NOT
    NULL, CHECK, foreign or unique keys: in `merge`, a row that repeats another row's second
    unique key), become `db_constraint` dead letters unless `on_reject` is `fail`. Floats
    into FLOAT columns keep MySQL's nearest value.

    MySQL keeps no time zone: timestamps with a zone (`timestamp[us, tz=...]`) are stored as
    their UTC time (in DATETIME columns; TIMESTAMP columns in the session's zone, UTC) and
    read back as timestamps without zone; timestamps without zone are stored as they are.
    A table created or evolved by a publish that then fails keeps its new shape (MySQL
    commits DDL at once), never rows.

    Returns:
        `WithErrors(output, error)`: the rows written (one element), and `DeadLetter`s.
        A spec can reference only `error`.
    """

    DIALECT = MYSQL

    def __init__(
        self,
        table: str,
        *,
        mode: str = "append",
        primary_key: list[str] | str | None = None,
        hard_delete_column: str | None = None,
        dedup_sort: str | None = None,
        create_table: bool = True,
        schema_drift: str = "evolve",
        on_reject: str = "dead_letter",
        keep_state: bool = False,
        run_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 3306,
        database: str | None = None,
        user: str = "root",
        password_env: str | None = "MYSQL_PASSWORD",
        dsn: str | None = None,
        dsn_env: str | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float | None = None,
        load_method: str = "auto",
        staging_path: str | None = None,
    ) -> None:
        """Args:
        table: target table (`name` or `database.name`).
        mode: `append` (default), `replace`, `merge`, `insert_only` or `scd2`.
        primary_key: key column(s); needed by `merge`, `insert_only` and `scd2`, and used when
            the table is created.
        hard_delete_column: boolean column; in `merge`, rows where it is true delete their key.
        dedup_sort: in `merge`, the column whose highest value picks the surviving row
            when a key repeats within the load (default: the last row staged).
        create_table: create the table from the batches' schema when it does not exist.
        schema_drift: `evolve` (add new columns, nullable), `freeze` (fail, listing the
            new columns) or `discard_columns` (drop columns the table lacks).
        on_reject: `dead_letter` (default) or `fail` (refused rows fail the run).
        keep_state: keep the run's incremental state (cursors, files, snapshots) in the
            table `_beam_etl_state` of this database, committed in the load's transaction;
            this sink then publishes last (one such sink per pipeline).
        run_id: the run recorded in the ledger; a fresh id when not given.
        host: server host.
        port: server port.
        database: database name.
        user: user name.
        password_env: environment variable holding the password (read at construction).
        dsn: `mysql://user:password@host:port/database` instead of the separate keys (prefer
            `dsn_env`: a DSN holding a password belongs in the environment, not the spec).
        dsn_env: environment variable holding such a DSN.
        connect_timeout: seconds to wait for a connection.
        statement_timeout: seconds a statement may run (no limit when not given).
        load_method: `auto` (LOAD DATA LOCAL INFILE when the server allows it), `load_data`
            or `insert` (multi-row INSERT).
        staging_path: local folder for staged parts (default: the system temp folder; on a
            multi-host cluster, a folder every worker shares).
        """
        super().__init__()
        if load_method not in _LOAD_METHODS:
            raise ValueError(
                f"Unknown load_method `{load_method}`; use one of {', '.join(_LOAD_METHODS)}"
            )
        config = mysql_read.config(
            host, port, database, user, password_env, connect_timeout, statement_timeout, dsn,
            dsn_env,
        )  # fmt: skip
        options = SinkOptions.create(
            table, mode, primary_key, hard_delete_column, dedup_sort, create_table,
            schema_drift, on_reject, run_id or new_run_id(), keep_state, load_method,
        )  # fmt: skip
        self._setup_write(table, config, options, staging_path)
