"""PostgreSQL source and sink on psycopg2: `COPY` both ways, key-range reads, one-transaction
publishing with a run ledger.

Reads stream `COPY (query) TO STDOUT` through a pipe into pyarrow's CSV reader (measured 2.3x
faster than a named cursor), one REPEATABLE READ, READ ONLY transaction per key range.
Writes stage bundles as Arrow IPC files and publish them in one transaction at the end: `COPY`
into a temporary staging table, one set-based statement per mode, the ledger row, commit.
"""

from beam_etl.core.publish import new_run_id
from beam_etl.io.sql import postgres_read, read
from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.options import SinkOptions, make_config
from beam_etl.io.sql.postgres import POSTGRES
from beam_etl.io.sql.postgres_copy import arrow_type
from beam_etl.io.sql.postgres_read import connect, is_transient
from beam_etl.io.sql.sink import WriteToDatabase

__all__ = ["ReadFromPostgres", "WriteToPostgres", "arrow_type", "connect", "is_transient"]


class ReadFromPostgres(read.ReadFromDatabase):
    """Read a PostgreSQL table or query into Arrow record batches, in parallel key ranges.

    Bounded; order is not kept. Streams the result (bounded memory: a batch of about 8 MiB, or
    `batch_rows` rows, per worker). Each key range is read in its own REPEATABLE READ, READ ONLY
    transaction, so it sees one consistent snapshot; different ranges may see different moments.
    Every row is read exactly once when `partition_column` does not change during the read: rows
    outside the bounds go to the first and last ranges, nulls to the first. Types: integers, floats,
    booleans, dates, timestamps (with time zone as UTC), numeric(p,s) as decimals, bytea as binary;
    json/jsonb, uuid, text and other types as strings. Batches carry the table (or `query`) as
    origin, with no line.
    """

    DIALECT = postgres_read.READER

    def __init__(
        self,
        *,
        table: str | None = None,
        query: str | None = None,
        dsn: str | None = None,
        dsn_env: str | None = None,
        host: str = "127.0.0.1",
        port: int = 5432,
        database: str | None = None,
        user: str = "postgres",
        password_env: str | None = "PG_PASSWORD",
        partition_column: str | None = None,
        num_partitions: int = 1,
        lower_bound: int | None = None,
        upper_bound: int | None = None,
        batch_rows: int | None = None,
        incremental: dict | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float | None = None,
    ) -> None:
        """Args:
        table: the table to read (`name` or `schema.name`); or give `query`.
        query: a SELECT whose result to read (trusted SQL from the spec author).
        dsn: a libpq connection string or URL (its password is never printed).
        dsn_env: name of an environment variable holding the DSN, instead of `dsn`.
        host: server host, when no DSN is given.
        port: server port.
        database: database name, when no DSN is given.
        user: user name.
        password_env: environment variable holding the password (read at construction).
        partition_column: integer column to split the read on.
        num_partitions: number of key ranges (parallel reads).
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
        config = make_config(
            "postgres", dsn, dsn_env, host, port, database, user, password_env,
            connect_timeout, statement_timeout,
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


class WriteToPostgres(WriteToDatabase):
    """Write record batches to a PostgreSQL table, all at once, in one transaction at the end.

    Bundles are staged as local Arrow IPC files; after every bundle has finished one publish
    step `COPY`s them into a temporary staging table and applies `mode` with set-based SQL:
    `append` (COPY straight into the target while no row is refused), `replace` (a new table
    swapped in by rename: readers see the old or the new content, never a partial one),
    `merge` (upsert on `primary_key`; the last row per key, or the one with the highest
    `dedup_sort`, wins; `hard_delete_column` true deletes), `insert_only` (keys already
    present are skipped and counted as dropped), `scd2` (history: a changed key's current
    version is closed and a new one inserted, with `valid_from`, `valid_to`, `is_current`,
    `row_hash`; `hard_delete_column` true closes it; see `beam_etl.io._scd2`). The run is
    recorded in `_beam_etl_runs`:
    publishing a recorded run id again changes nothing. A failed run leaves the table as it
    was; a lost connection is retried from the start on a new one.

    A value is stored exactly or its row is refused: text longer than a `varchar(n)` (even by
    trailing spaces), numbers that a `numeric(p,s)` or an integer column would round, times a
    `timestamp(p)` would round, a time of day a `date` would drop, text with NUL characters or
    that is not UTF-8, dates before year 1 and nanoseconds are refused, like rows a constraint
    refuses (NOT NULL, CHECK, foreign or unique keys) or values out of range. Refused rows
    become `db_constraint` dead letters with the database's message, origin file and line,
    and key, unless `on_reject` is `fail`; finding them costs a few set-based queries and
    about `2 * refused * log2(rows)` indexed statements at most. Floats into `real` columns
    keep PostgreSQL's nearest value; timestamps with a zone into `timestamp without time
    zone` columns are stored as their UTC time.

    Returns:
        `WithErrors(output, error)`: the rows written (one element), and `DeadLetter`s.
        A spec can reference only `error`.
    """

    DIALECT = POSTGRES

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
        dsn: str | None = None,
        dsn_env: str | None = None,
        host: str = "127.0.0.1",
        port: int = 5432,
        database: str | None = None,
        user: str = "postgres",
        password_env: str | None = "PG_PASSWORD",
        connect_timeout: float = 10.0,
        statement_timeout: float | None = None,
        staging_path: str | None = None,
    ) -> None:
        """Args:
        table: target table (`name` or `schema.name`).
        mode: `append` (default), `replace`, `merge`, `insert_only` or `scd2`.
        primary_key: key column(s); needed by `merge`, `insert_only` and `scd2`, and used
            when the table is created.
        hard_delete_column: boolean column; in `merge`, rows where it is true delete their
            key (in `scd2`, close its current version).
        dedup_sort: in `merge` and `scd2`, the column whose highest value picks the surviving row
            when a key repeats within the load (default: the last row staged).
        create_table: create the table from the batches' schema when it does not exist.
        schema_drift: `evolve` (add new columns, nullable), `freeze` (fail, listing the
            new columns) or `discard_columns` (drop columns the table lacks).
        on_reject: `dead_letter` (default) or `fail` (refused rows fail the run).
        keep_state: keep the run's incremental state (cursors, files, snapshots) in the
            table `_beam_etl_state` of this database, committed in the load's transaction;
            this sink then publishes last (one such sink per pipeline).
        run_id: the run recorded in the ledger; a fresh id when not given.
        dsn: a libpq connection string or URL (its password is never printed).
        dsn_env: name of an environment variable holding the DSN, instead of `dsn`.
        host: server host, when no DSN is given.
        port: server port.
        database: database name, when no DSN is given.
        user: user name.
        password_env: environment variable holding the password (read at construction).
        connect_timeout: seconds to wait for a connection.
        statement_timeout: seconds a statement may run (no limit when not given).
        staging_path: local folder for staged parts (default: the system temp folder; on a
            multi-host cluster, a folder every worker shares).
        """
        super().__init__()
        options = SinkOptions.create(
            table, mode, primary_key, hard_delete_column, dedup_sort, create_table,
            schema_drift, on_reject, run_id or new_run_id(), keep_state,
        )  # fmt: skip
        quote_identifier(table, "postgres")
        config = make_config(
            "postgres", dsn, dsn_env, host, port, database, user, password_env,
            connect_timeout, statement_timeout,
        )  # fmt: skip
        self._setup_write(table, config, options, staging_path)
