"""PostgreSQL source and sink on psycopg2: `COPY` both ways, key-range reads, one-transaction
publishing with a run ledger.

Reads stream `COPY (query) TO STDOUT` through a pipe into pyarrow's CSV reader (measured 2.3x
faster than a named cursor), one REPEATABLE READ, READ ONLY transaction per key range.
Writes stage bundles as Arrow IPC files and publish them in one transaction at the end: `COPY`
into a temporary staging table, one set-based statement per mode, the ledger row, commit.
"""

import contextlib
import hashlib
import io
import os
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, Final, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_etl.batches import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN
from beam_etl.errors import ConnectorError
from beam_etl.io import _scd2
from beam_etl.io._files import new_run_id
from beam_etl.io.sql import keptstate, read
from beam_etl.io.sql.identifiers import LEDGER_TABLE, quote_identifier
from beam_etl.io.sql.loader import (
    apply_bisecting,
    refusals_sql,
    schema_drift,
    unique_violations_sql,
)
from beam_etl.io.sql.options import DbConfig, check_write_args, make_config
from beam_etl.io.sql.publish import Published, StageAndPublishDb, check_expected
from beam_etl.io.sql.retry import with_retries
from beam_etl.io.sql.staging import (
    ROW_COLUMN,
    StagedOrigins,
    conform,
    last_rows,
    numbered,
    parts_schema,
    read_parts,
    staging_folder,
)
from beam_etl.io.sql.values import UnloadableError, loadable, sql_type, text_for_load
from beam_etl.state import current_state
from beam_etl.transforms.outputs import WithErrors

_TRANSIENT_CODES: Final = frozenset({"40P01", "40001", "57P01", "57P02", "57P03"})
_PG_TO_ARROW: Final[dict[int, pa.DataType]] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
_BYTEA: Final = 17
_NUMERIC: Final = 1700
_SESSION: Final = "SET TIME ZONE 'UTC'; SET bytea_output = 'hex'; SET extra_float_digits = 3"


def connect(config: DbConfig, *, readonly: bool = False, replication: bool = False) -> Any:
    """Return a psycopg2 connection (retried while the failure is transient); with
    `replication`, a logical replication connection whose session is in UTC (for timestamps'
    text form) with exact floats."""
    import psycopg2

    options = ""
    if config.statement_timeout is not None:
        options = f"-c statement_timeout={int(config.statement_timeout * 1000)}"
    kwargs: dict[str, Any] = {"connect_timeout": max(1, round(config.connect_timeout))}
    if replication:
        from psycopg2.extras import LogicalReplicationConnection

        kwargs["connection_factory"] = LogicalReplicationConnection
        options = f"-c TimeZone=UTC -c extra_float_digits=3 {options}".strip()
    if options:
        kwargs["options"] = options

    def attempt():
        if config.dsn is not None:  # a password from `password_env` overrides the DSN's
            extra = {"password": config.password.reveal()} if config.password else {}
            return psycopg2.connect(config.dsn.reveal(), **kwargs, **extra)
        return psycopg2.connect(
            host=config.host,
            port=config.port,
            dbname=config.database,
            user=config.user,
            password=config.password.reveal() or None,
            **kwargs,
        )

    connection = with_retries(attempt, config=config, is_transient=is_transient, what="Connecting")
    if readonly:
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
    return connection


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: lost connections, deadlocks, serialization failures."""
    import psycopg2

    code = getattr(exc, "pgcode", None)
    if code in _TRANSIENT_CODES:
        return True
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if _PERMANENT.search(str(exc)):  # the server answered: waiting will not change its mind
        return False
    # Without a SQLSTATE (or class 08), an OperationalError is a refused or dropped connection.
    return isinstance(exc, psycopg2.OperationalError) and (not code or code.startswith("08"))


#: Connection failures a retry cannot mend (libpq gives them no SQLSTATE at connect time).
_PERMANENT: Final = re.compile(
    r"database \".*\" does not exist|role \".*\" does not exist|password authentication failed"
    r"|no pg_hba\.conf entry|SSL is not enabled|invalid connection option|"
    r"could not translate host name|Name or service not known",
    re.I,
)


def arrow_type(type_code: int, precision: int | None, scale: int | None) -> pa.DataType:
    """Return the Arrow type a PostgreSQL column type (by OID) is read as.

    json/jsonb, uuid, text types and anything unlisted are read as their text form; a
    numeric without declared precision as text too (its scale varies by row).
    """
    if type_code in _PG_TO_ARROW:
        return _PG_TO_ARROW[type_code]
    if type_code == _BYTEA:
        return pa.binary()
    if type_code == _NUMERIC and precision and precision <= 1000 and scale is not None:
        return (
            pa.decimal128(precision, scale)
            if precision <= 38
            else pa.decimal256(min(precision, 76), scale)
        )
    return pa.string()


class _Postgres(read.Dialect):
    """Reads with `COPY (query) TO STDOUT` in a REPEATABLE READ, READ ONLY transaction."""

    name = "postgres"

    def connect(self, config: DbConfig) -> Any:
        return connect(config, readonly=True)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def read(self, connection, sql, params, source, batch_rows) -> Iterator[pa.RecordBatch]:
        with connection.cursor() as cursor:
            cursor.execute(_SESSION)
            if params:  # COPY takes no parameters: bind them into the text
                sql = cursor.mogrify(sql, params).decode()
            schema = self._describe(cursor, sql, source)
            yield from _copy_out(
                cursor, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", schema.names, schema.types
            )

    def describe(self, connection, sql, source) -> pa.Schema:
        with connection.cursor() as cursor:
            cursor.execute(_SESSION)
            return self._describe(cursor, sql, source)

    @staticmethod
    def _describe(cursor, sql: str, source: str) -> pa.Schema:
        cursor.execute(f"{sql} LIMIT 0")
        description = list(cursor.description)
        names = [column.name for column in description]
        if len(set(names)) != len(names):
            raise ConnectorError(f"The query of `{source}` repeats column names")
        types = [arrow_type(c.type_code, c.precision, c.scale) for c in description]
        return pa.schema(list(zip(names, types)))


def _copy_out(cursor, sql: str, names: list[str], types: list[pa.DataType]):
    """Stream `COPY ... TO STDOUT` through a pipe into Arrow batches of those names and types."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        with open(write_fd, "wb", buffering=1 << 20) as out:
            try:
                cursor.copy_expert(sql, out)
            except BaseException as exc:  # handed to the reading thread below
                failure.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with io.BufferedReader(io.FileIO(read_fd, "r"), 1 << 20) as stream:
        if stream.peek(1):
            read_types = {n: (pa.string() if t == pa.binary() else t) for n, t in zip(names, types)}
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types=read_types,
                    null_values=[""],
                    true_values=["t"],
                    false_values=["f"],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                yield _decode_bytea(batch, types)
        else:
            stream.read()
    producer.join()
    if failure:
        raise failure[0]


def _decode_bytea(batch: pa.RecordBatch, types: list[pa.DataType]) -> pa.RecordBatch:
    if pa.binary() not in types:
        return batch
    arrays = [
        pa.array([None if v is None else bytes.fromhex(v[2:]) for v in column.to_pylist()], t)
        if t == pa.binary()
        else column
        for column, t in zip(batch.columns, types)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class ReadFromPostgres(read.ReadFromDatabase):
    """Read a PostgreSQL table or query into Arrow record batches, in parallel key ranges.

    Bounded; order is not kept. Streams the result (bounded memory: about `batch_rows` rows
    per worker). Each key range is read in its own REPEATABLE READ, READ ONLY transaction, so
    it sees one consistent snapshot; different ranges may see different moments. Every row is
    read exactly once when `partition_column` does not change during the read: rows outside
    the bounds go to the first and last ranges, nulls to the first. Types: integers, floats,
    booleans, dates, timestamps (with time zone as UTC), numeric(p,s) as decimals, bytea as
    binary; json/jsonb, uuid, text and other types as strings. Batches carry the table (or
    `query`) as origin, with no line.
    """

    DIALECT = _Postgres()

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
        batch_rows: int = 50_000,
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
        batch_rows: rows per output batch.
        incremental: read only what changed since the last successful run:
            `{cursor: updated_at, initial: "2024-01-01", lag: "10m", end: null,
            on_null: exclude | include | reject}` (see README, Incremental loads).
        connect_timeout: seconds to wait for a connection.
        statement_timeout: seconds a statement may run (no limit when not given).
        """
        super().__init__()
        config = make_config(
            "postgres",
            dsn=dsn,
            dsn_env=dsn_env,
            host=host,
            port=port,
            database=database,
            user=user,
            password_env=password_env,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
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


class _CsvStream(io.RawIOBase):
    """A file-like view of batches as CSV, so that one `COPY FROM STDIN` loads them all.

    A thread renders the next batches while the driver sends the current one (pyarrow's CSV
    writer releases the GIL), so rendering costs little beyond the COPY itself.
    """

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._data = b""
        self._position = 0
        self.failure: BaseException | None = None  # raised by a read: the driver only quotes it
        self._thread = threading.Thread(target=self._render, args=(batches,), daemon=True)
        self._thread.start()

    def _render(self, batches: Iterator[pa.RecordBatch]) -> None:
        try:
            for batch in batches:
                out = io.BytesIO()
                options = pacsv.WriteOptions(include_header=False)
                pacsv.write_csv(text_for_load(batch), out, options)
                self._put(out.getvalue())
            self._put(None)
        except BaseException as exc:  # handed to the reading side
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._position >= len(self._data):
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.failure = item
                raise item
            if item is None:
                self._queue.put(None)  # stay at the end for any further read
                return b""
            self._data, self._position = item, 0
        end = len(self._data) if size < 0 else self._position + size
        chunk = self._data[self._position : end]
        self._position += len(chunk)
        return chunk

    def close(self) -> None:
        self._stop.set()  # a COPY that failed midway reads no further: let the thread end
        self._thread.join()
        super().close()


def _copy_in(cursor, table_sql: str, names: list[str], batches: Iterator[pa.RecordBatch]) -> None:
    columns = ", ".join(quote_identifier(n, "postgres") for n in names)
    stream = _CsvStream(batches)
    try:
        sql = f"COPY {table_sql} ({columns}) FROM STDIN WITH (FORMAT csv)"
        cursor.copy_expert(sql, stream, size=1 << 20)
    except Exception:
        if stream.failure is not None:  # psycopg2 reports it as a cancelled COPY
            raise stream.failure from None
        raise
    finally:
        stream.close()


def _is_row_error(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None) or ""
    return code[:2] in ("22", "23")  # data exception, integrity constraint violation


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
    detail = getattr(diag, "message_detail", None)
    return f"{primary} ({detail})" if detail else primary


class _Column(NamedTuple):
    """A target column: its type (with modifiers), the type to cast to (without them, so
    that assigning applies them strictly: too long raises, where an explicit cast would
    truncate), and whether it is NOT NULL."""

    type: str
    base: str
    not_null: bool


_SIZED: Final = re.compile(r"(?P<name>[a-z ]+)\((?P<size>\d+)(?:,(?P<scale>-?\d+))?\)(?P<rest>.*)")
_VARCHAR: Final = re.compile(r"character varying\((\d+)\)")


def _exact_key(type_: pa.DataType) -> bool:
    """Whether a staging column of this type compares as Arrow does (bytes, integers)."""
    types = pa.types
    return types.is_integer(type_) or types.is_string(type_) or types.is_large_string(type_)


_INTEGERS: Final = {"smallint": 16, "integer": 32, "bigint": 64}
_DIGITS: Final = {8: 3, 16: 5, 32: 10, 64: 19}  # decimal digits of the widest integer
_REFUSE_DDL: Final = (
    "CREATE FUNCTION pg_temp.beam_etl_refuse(message text, kind anyelement) RETURNS anyelement "
    "LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION USING MESSAGE = message, ERRCODE = '22000'; "
    "END$$"
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _exactness(column: str, staged: pa.DataType, target: str, base: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL on the staging row `s`, true where assigning its
    value to a `target` column would change it silently; None where that cannot happen.

    Caught: text longer than a varchar (trailing spaces are cut silently), numbers rounded
    to a numeric's scale or to a whole number, times rounded to fewer fractional digits, a
    time of day dropped by a date column. Floats into `real` keep PostgreSQL's nearest value.
    """
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    value = f"CAST({raw} AS {base})"
    sized = _SIZED.fullmatch(target)
    text = pa.types.is_string(staged) or pa.types.is_large_string(staged)
    where = f"of column `{column}`"
    if sized and sized["name"] == "character varying":
        size = sized["size"]
        message = _literal(f"value too long for type {target} (column `{column}`)")
        return f"char_length({value}) > {size}", message
    if sized and sized["name"] == "numeric" and sized["scale"] is not None:
        scale = int(sized["scale"])
        if _fits(staged, int(sized["size"]), scale):
            return None
        message = f"'value `' || {value} || '` {where} does not fit {target} without rounding'"
        return f"{value} <> round({value}, {scale})", message
    if sized and sized["name"].startswith(("time", "interval")) and int(sized["size"]) < 6:
        message = f"'value `' || {value} || '` {where} would be rounded to {target}'"
        return f"{value} <> CAST({value} AS {target})", message
    inexact = pa.types.is_floating(staged) or (pa.types.is_decimal(staged) and staged.scale > 0)
    if target in _INTEGERS and inexact:
        return f"{raw} <> round({raw})", f"'value `' || {raw} || '` {where} is not whole'"
    if target == "date" and (pa.types.is_timestamp(staged) or text):
        stamp = "timestamptz" if getattr(staged, "tz", None) else "timestamp"
        message = f"'value `' || {raw} || '` {where} has a time of day, which a date drops'"
        return f"CAST({raw} AS {stamp}) <> CAST({value} AS {stamp})", message
    return None


def _fits(staged: pa.DataType, precision: int, scale: int) -> bool:
    """Whether every value of `staged` fits numeric(precision, scale) without rounding."""
    if pa.types.is_decimal(staged):
        return staged.scale <= scale and staged.precision - staged.scale <= precision - scale
    if pa.types.is_integer(staged):
        return _DIGITS[staged.bit_width] + pa.types.is_unsigned_integer(staged) <= precision - scale
    return False


def _overflow(column: str, staged: pa.DataType, target: str, base: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL, true where a value is out of the `target` type's
    range (the database would refuse it: found set-based, it needs no bisection)."""
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    value = f"CAST({raw} AS {base})"
    sized = _SIZED.fullmatch(target)
    where = f"of column `{column}`"
    if sized and sized["name"] == "numeric" and sized["scale"] is not None:
        precision, scale = int(sized["size"]), int(sized["scale"])
        if _fits(staged, precision, scale) or pa.types.is_string(staged):
            return None
        limit = f"1e{precision - scale}"
        message = f"'numeric field overflow: `' || {raw} || '` {where} does not fit {target}'"
        return f"{raw} <> 'NaN' AND abs(round({value}, {scale})) >= {limit}", message
    numeric = pa.types.is_integer(staged) or pa.types.is_decimal(staged)
    if target in _INTEGERS and (numeric or pa.types.is_floating(staged)):
        bits = _INTEGERS[target]
        if (
            pa.types.is_integer(staged)
            and staged.bit_width + pa.types.is_unsigned_integer(staged) <= bits
        ):
            return None
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        message = f"'{target} out of range: `' || {raw} || '` {where}'"
        return f"NOT ({raw} BETWEEN {low} AND {high})", message
    return None


def _duplicate_message(index: str, columns: list[str], prefix: str) -> str:
    """Return SQL of PostgreSQL's message for a repeated key, the values named `{prefix}0`..."""
    values = ", ".join(f"{prefix}{i}" for i in range(len(columns)))
    return (
        f'\'duplicate key value violates unique constraint "{index}" (Key ({", ".join(columns)})'
        f"=(' || concat_ws(', ', {values}) || ') already exists.)'"
    )


def _value_sql(column: str, target: _Column, check: tuple[str, str] | None) -> str:
    """Return the SQL of a staged value as assigned to the target column: cast to the type
    without modifiers, and refused (`beam_etl_refuse`) where assigning would change it."""
    value = f"CAST(s.{_q(column)} AS {target.base})"
    if check is None:
        return value
    condition, message = check
    return (
        f"CASE WHEN {condition} THEN pg_temp.beam_etl_refuse({message}, NULL::{target.base}) "
        f"ELSE {value} END"
    )


class _PgPublish:
    """Publishes staged parts to PostgreSQL in one transaction, recorded in the ledger."""

    def __init__(self, config: DbConfig, table: str, settings: dict[str, Any]) -> None:
        self.config = config
        self.table = table
        self.settings = settings  # mode, keys, hard_delete, dedup_sort, create, drift, ...

    def __call__(
        self, parts: list[Any], *, commit: bool = True, expect: Published | None = None
    ) -> Published:
        """Publish `parts`; with `commit=False`, only try (everything rolled back); with
        `expect`, publish nothing unless the load does what the trial found."""
        return with_retries(
            lambda: self._transaction(parts, commit, expect),
            config=self.config,
            is_transient=is_transient,
            what=f"Publishing to `{self.table}`",
        )

    def _transaction(self, parts: list[Any], commit: bool, expect: Published | None) -> Published:
        ledger = quote_identifier(LEDGER_TABLE, "postgres")
        staged = sum(rows for _, rows in parts)
        run_id = self.settings["run_id"]
        connection = connect(self.config)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                _create_ledger(cursor, ledger)
            connection.autocommit = False
            with connection.cursor() as cursor:
                key = int.from_bytes(
                    hashlib.blake2b(self.table.encode(), digest_size=8).digest(), "big", signed=True
                )
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                cursor.execute(
                    f"SELECT rows_written FROM {ledger} WHERE run_id = %s AND target = %s",
                    (run_id, self.table),
                )
                done = cursor.fetchone()
                if done is not None:  # this run was published before: change nothing
                    connection.rollback()
                    return Published(done[0], staged - done[0], [], already=True)
                load = _PgLoad(cursor, self.table, self.settings)
                result = (None if commit else load.predict(parts)) or load.run(parts)
                if result.rejects and self.settings["on_reject"] == "fail":
                    first = "; ".join(f"{r.origin}: {r.message}" for r in result.rejects[:3])
                    raise ConnectorError(
                        f"PostgreSQL refused {len(result.rejects)} row(s) for `{self.table}` "
                        f"(on_reject: fail), nothing published: {first}"
                    )
                cursor.execute(
                    f"INSERT INTO {ledger} (run_id, target, rows_written, published_at) "
                    "VALUES (%s, %s, %s, now())",
                    (run_id, self.table, result.written),
                )
                state = current_state()
                if self.settings.get("keep_state") and state is not None and commit:
                    # the run's state commits with the load (see `_dbstate`)
                    keptstate.create(cursor, "postgres")
                    keptstate.write(
                        cursor, "postgres", state.pipeline, state.run_id, state.proposals
                    )
                check_expected(result, expect, self.table)
            if commit:
                connection.commit()
            else:
                connection.rollback()
            return result
        finally:
            connection.close()  # without a commit, closing rolls everything back


def _create_ledger(cursor, ledger: str) -> None:
    import psycopg2

    # A concurrent publish may create it between the existence check and the insert.
    with contextlib.suppress(psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateTable):
        cursor.execute(_LEDGER_DDL.format(ledger=ledger))


_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id text NOT NULL, target text NOT NULL, "
    "rows_written bigint NOT NULL, published_at timestamptz NOT NULL, "
    "PRIMARY KEY (run_id, target))"
)


class _PgLoad:
    """One publish inside an open transaction: table management, staging, the mode's SQL."""

    def __init__(self, cursor, table: str, settings: dict[str, Any]) -> None:
        self.cursor = cursor
        self.table = table
        self.target = quote_identifier(table, "postgres")
        self.s = settings
        self.token = os.urandom(6).hex()
        self.origins = StagedOrigins("postgres")
        self.taken: list[tuple[int, dict[str, Any], str]] = []  # rows checks took out
        self.refused_log = False  # the temporary table `_one_by_one` notes refusals in

    def run(self, parts: list[Any]) -> Published:
        # Timestamps without zone are UTC, and a zoned one assigned to a column without zone
        # keeps its UTC time, whatever the server's or the DSN's TimeZone.
        self._execute("SET LOCAL TIME ZONE 'UTC'")
        schema = parts_schema(parts)
        staged = sum(rows for _, rows in parts)
        existing = self._columns()
        if schema is None:  # nothing staged: `replace` still empties the target
            if existing and self.s["mode"] == "replace":
                self._swap(self._new_like())
            return Published(0, 0, [])
        fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
        load = [f for f in fields if f.name != self.s["hard_delete"]]
        if existing is None:
            if not self.s["create_table"]:
                raise ConnectorError(f"Table `{self.table}` does not exist (create_table: false)")
            self._create(load)
        else:
            add, discard = schema_drift(
                pa.schema(load), list(existing), self.s["drift"], self.table
            )
            for f in add:
                column = f"{_q(f.name)} {sql_type(f.type, 'postgres')}"
                self._execute(f"ALTER TABLE {self.target} ADD COLUMN {column}")
            fields = [f for f in fields if f.name not in discard]
            load = [f for f in load if f.name not in discard]
        names = [f.name for f in load]
        missing = [k for k in self.s["keys"] if k not in names]
        if missing and self.s["mode"] in ("merge", "insert_only", "scd2"):
            raise ConnectorError(
                f"Primary key column(s) {missing} are not in the load for `{self.table}`"
            )
        if self.s["mode"] == "append" and self._fast_append(parts, load, self.target):
            return Published(staged, 0, [])
        if self.s["mode"] == "merge" and existing is None:
            written = self._fast_merge_into_new(parts, fields, load)
            if written is not None:
                return Published(written, staged - written, [])
        if self.s["mode"] == "replace":
            # COPY straight into the replacement (or the table this transaction created) and
            # swap it in; a refused row rolls the COPY back and the staging path finds it.
            dest = self._new_like() if existing is not None else self.target
            if self._fast_append(parts, load, dest):
                if existing is not None:
                    self._swap(dest)
                return Published(staged, 0, [])
            if existing is not None:
                self._execute(f"DROP TABLE {dest}")
        return self._through_staging(parts, fields, names, staged, existing is not None)

    def predict(self, parts: list[Any]) -> Published | None:
        """Return what loading `parts` will do without loading them, when the database
        cannot refuse a row the Arrow screening (`unloadable`) lets through: the load creates
        the table (append or replace, no keys), or merges into a table that only a primary key
        on the merge keys guards (see `_predict_merge`). None otherwise: then the trial loads."""
        if self.s["mode"] == "merge":
            return self._predict_merge(parts)
        if (
            self.s["mode"] not in ("append", "replace")
            or self.s["keys"]
            or not self.s["create_table"]
            or self._columns() is not None
        ):
            return None
        schema = parts_schema(parts)
        if schema is None:
            return Published(0, 0, [])
        fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
        for f in fields:
            sql_type(f.type, "postgres")  # raises for a type no column holds, as the load
        staged = sum(rows for _, rows in parts)
        for _batch in self.origins.batches(parts, pa.schema([*fields, *StagedOrigins.FIELDS])):
            pass
        rejects = [
            self.origins.reject(self.s["step"], self.table, [], row, message)
            for row, message in self.origins.screened
        ]
        return Published(staged - len(rejects), 0, rejects)

    def _predict_merge(self, parts: list[Any]) -> Published | None:
        """Predict a `merge`: every staged key is written once (the last row per key), when
        nothing but the primary key on the merge keys can refuse a row: no trigger, CHECK,
        foreign key (either way), exclusion or other unique key, row security, domain or
        always-generated identity column; every loaded column stores its values exactly (text
        into a varchar: measured here); the user may write (or create) the table; no staged
        key is null. None otherwise."""
        schema = parts_schema(parts)
        keys, flag = self.s["keys"], self.s["hard_delete"]
        if schema is None or not keys:
            return None
        fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
        load = [f for f in fields if f.name != flag]
        if not set(keys) <= {f.name for f in load}:
            return None
        existing = self._columns()
        max_chars: dict[str, int] = {}
        if existing is None:
            if not self.s["create_table"] or not self._may("create"):
                return None
            for f in load:
                sql_type(f.type, "postgres")  # raises for a type no column holds, as the load
        else:
            if any(f.name not in existing for f in load) and self.s["drift"] != "evolve":
                return None
            if not self._may("write") or self._guarded():
                return None
            target = self._describe(self.target)
            for f in load:
                column = target.get(f.name)
                if column is None:
                    continue  # added by the load: nullable, of its own type
                if column.not_null and f.name not in keys:
                    return None
                if _overflow(f.name, f.type, column.type, column.base):
                    return None
                if _exactness(f.name, f.type, column.type, column.base):
                    size = _VARCHAR.fullmatch(column.type)
                    if not (
                        size and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
                    ):
                        return None
                    max_chars[f.name] = int(size[1])  # measured in Arrow below
            unique = self._unique_keys(self.target)
            if [u[1] for u in unique] != [frozenset(keys)]:
                return None
        found, too_long = [], False
        for batch in self.origins.batches(parts, pa.schema([*fields, *StagedOrigins.FIELDS])):
            found.append(pa.Table.from_batches([batch]).select(keys))
            for name, limit in max_chars.items():
                longest = pc.max(pc.utf8_length(batch.column(name))).as_py()
                too_long = too_long or (longest is not None and longest > limit)
        table = pa.concat_tables(found).combine_chunks() if found else None
        if too_long or (table is not None and any(table.column(k).null_count for k in keys)):
            self.origins = StagedOrigins("postgres")  # the trial screens again
            return None
        written = table.group_by(keys).aggregate([]).num_rows if table is not None else 0
        rejects = [
            self.origins.reject(self.s["step"], self.table, keys, row, message)
            for row, message in self.origins.screened
        ]
        staged = sum(rows for _, rows in parts)
        return Published(written, staged - written - len(rejects), rejects)

    def _may(self, action: str) -> bool:
        """Whether this user may `write` (insert, update, delete) the target, or `create` it."""
        if action == "write":
            self.cursor.execute(
                "SELECT has_table_privilege(to_regclass(%s), 'INSERT, UPDATE, DELETE')",
                (self.target,),
            )
        else:
            schema = self.table.rpartition(".")[0] or None
            self.cursor.execute(
                "SELECT has_schema_privilege(COALESCE(%s, current_schema()), 'CREATE')", (schema,)
            )
        return bool(self.cursor.fetchone()[0])

    def _guarded(self) -> bool:
        """Whether anything but its keys can refuse a row of the target (see
        `_predict_merge`)."""
        self.cursor.execute(
            "SELECT c.relkind <> 'r' OR c.relrowsecurity "
            "OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal) "
            "OR EXISTS (SELECT 1 FROM pg_constraint WHERE (conrelid = c.oid "
            "AND contype IN ('c', 'f', 'x')) OR (confrelid = c.oid AND contype = 'f')) "
            "OR EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "AND (t.typtype = 'd' OR a.attidentity = 'a')) "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (self.target,),
        )
        return bool(self.cursor.fetchone()[0])

    def _execute(self, sql: str, params: Any = None) -> int:
        self.cursor.execute(sql, params)
        return self.cursor.rowcount

    def _columns(self) -> dict[str, str] | None:
        """Return the target's column types by name (in table order), None if it is missing."""
        return self._columns_of(self.target) or None

    def _create(self, load: list[pa.Field]) -> None:
        keys = self.s["keys"]
        columns = [f"{_q(f.name)} {sql_type(f.type, 'postgres', key=f.name in keys)}" for f in load]
        if self.s["mode"] == "scd2":  # every version of a key, told apart by `valid_from`
            columns += _scd2.extra_columns(_q, "timestamp(6)", "boolean")
            keys = [*keys, _scd2.VALID_FROM]
        if keys:
            columns.append(f"PRIMARY KEY ({', '.join(_q(k) for k in keys)})")
        self._execute(f"CREATE TABLE {self.target} ({', '.join(columns)})")

    def _fast_merge_into_new(
        self, parts: list[Any], fields: list[pa.Field], load: list[pa.Field]
    ) -> int | None:
        """Merge into the table this transaction created (a first load, such as a change
        capture's snapshot): the last row per key, less the rows `hard_delete_column` marks,
        COPYed straight in. Return the keys written (deleted ones included, as the staging
        path counts them), or None when a row is refused or screened out (the staging path
        then refuses that row alone)."""
        keys, flag, sort = self.s["keys"], self.s["hard_delete"], self.s["dedup_sort"]
        schema = pa.schema([*fields, *StagedOrigins.FIELDS])
        # Row numbers as staging gives them while nothing is screened out (else: no fast path).
        keep = last_rows(numbered(parts, [*keys, *([sort] if sort else [])]), keys, sort)
        origins, written = StagedOrigins("postgres"), 0

        def rows() -> Iterator[pa.RecordBatch]:
            nonlocal written
            for batch in origins.batches(parts, schema):
                if origins.screened:
                    raise UnloadableError("a row cannot be loaded into postgres as it is")
                if keep is not None:
                    batch = batch.filter(pc.is_in(batch.column(ROW_COLUMN), keep))
                written += batch.num_rows
                if flag:
                    batch = batch.filter(pc.invert(pc.fill_null(batch.column(flag), False)))
                yield batch

        fast = self._fast_append(parts, load, self.target, rows(), screened=True)
        return written if fast else None

    def _fast_append(
        self,
        parts: list[Any],
        load: list[pa.Field],
        dest: str,
        batches: Iterator[pa.RecordBatch] | None = None,
        *,
        screened: bool = False,
    ) -> bool:
        """COPY `batches` (default: the staged parts) straight into `dest`; False (and nothing
        kept) when a row is refused, or when a value might be changed on the way (the staging
        path checks those row by row). `screened`: `batches` raise at an `unloadable` row
        already."""
        schema = pa.schema(load)
        target = self._describe(dest)
        max_chars = {}
        for f in load:
            check = _exactness(f.name, f.type, *target[f.name][:2])
            size = _VARCHAR.fullmatch(target[f.name].type)
            if check and size and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
                max_chars[f.name] = int(size[1])  # checked in Arrow on the way
            elif check:
                return False
        self._execute("SAVEPOINT beam_etl_copy")
        try:
            conformed: Iterator[pa.RecordBatch] = (
                conform(b, schema) for b in batches or read_parts(parts)
            )
            if not screened or max_chars:
                conformed = loadable(conformed, "postgres", max_chars)
            _copy_in(self.cursor, dest, schema.names, conformed)
        except Exception as exc:
            self._execute("ROLLBACK TO SAVEPOINT beam_etl_copy")
            if not (_is_row_error(exc) or isinstance(exc, UnloadableError)):
                raise
            return False
        self._execute("RELEASE SAVEPOINT beam_etl_copy")
        return True

    def _stage(self, parts: list[Any], fields: list[pa.Field]) -> str:
        stage = _q(f"_beam_etl_stage_{self.token}")
        columns = [f"{_q(f.name)} {sql_type(f.type, 'postgres')}" for f in fields]
        columns += [f"{_q(FILE_COLUMN)} integer", f"{_q(LINE_COLUMN)} bigint"]
        columns.append(f"{_q(ROW_COLUMN)} bigint")
        self._execute(f"CREATE TEMP TABLE {stage} ({', '.join(columns)}) ON COMMIT DROP")
        schema = pa.schema([*fields, *StagedOrigins.FIELDS])
        batches = self.origins.batches(parts, schema)
        keys, sort = self.s["keys"], self.s["dedup_sort"]
        if self.s["mode"] in ("merge", "scd2") and keys:
            # The last row per key chosen in Arrow: a repeated key is neither sent nor
            # deduplicated by the server (a CDC run updates most rows it inserts). The key
            # columns alone tell whether any key repeats (screening only takes rows out);
            # only then are the rows screened once more, to number them as staging does.
            named = [*keys, *([sort] if sort else [])]
            keep = last_rows(numbered(parts, named), keys, sort)
            if keep is not None:
                screened = StagedOrigins("postgres").batches(parts, schema)
                keep = last_rows(screened, keys, sort)
            if keep is not None:
                batches = (b.filter(pc.is_in(b.column(ROW_COLUMN), keep)) for b in batches)
        _copy_in(self.cursor, stage, schema.names, batches)
        return stage

    def _deduplicate(self, stage: str) -> str:
        keys = ", ".join(_q(k) for k in self.s["keys"])
        order = f"{_q(self.s['dedup_sort'])} DESC NULLS LAST, " if self.s["dedup_sort"] else ""
        unique = f"_beam_etl_dedup_{self.token}"
        has_null = " OR ".join(f"{_q(k)} IS NULL" for k in self.s["keys"])
        self.cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {stage} WHERE NOT ({has_null}) "
            f"GROUP BY {keys} HAVING count(*) > 1)"
        )
        if not self.cursor.fetchone()[0]:  # every key once: no second copy of the load
            return stage
        self._execute(
            f"CREATE TEMP TABLE {_q(unique)} ON COMMIT DROP AS "
            f"(SELECT DISTINCT ON ({keys}) * FROM {stage} WHERE NOT ({has_null}) "
            f"ORDER BY {keys}, {order}{_q(ROW_COLUMN)} DESC) "
            f"UNION ALL (SELECT * FROM {stage} WHERE {has_null})"
        )
        return _q(unique)

    def _through_staging(self, parts, fields, names, staged, existed) -> Published:
        mode, keys = self.s["mode"], self.s["keys"]
        source = self._stage(parts, fields)
        if mode in ("merge", "scd2") and not all(
            _exact_key(f.type) for f in fields if f.name in keys
        ):
            # Staged once per key already (`_stage`); a key type the server may compare
            # differently from Arrow (float, time with a finer unit) is deduplicated again.
            source = self._deduplicate(source)
        dest = self._new_like() if mode == "replace" and existed else self.target
        types = self._describe(dest)
        loaded = {f.name: f.type for f in fields}
        checks = {n: _exactness(n, loaded[n], *types[n][:2]) for n in names}
        if any(checks.values()):
            self._execute(_REFUSE_DDL)
        row = _q(ROW_COLUMN)
        self.cursor.execute(f"SELECT count(*), min({row}), max({row}) FROM {source}")
        candidates, low, high = self.cursor.fetchone()
        in_range = f"s.{row} >= %s AND s.{row} < %s"
        values = ", ".join(_value_sql(n, types[n], checks[n]) for n in names)
        columns = ", ".join(_q(n) for n in names)
        insert = f"INSERT INTO {dest} ({columns}) SELECT {values} FROM {source} s WHERE {in_range}"
        delete = None
        if mode == "insert_only":
            insert += f" ON CONFLICT ({', '.join(_q(k) for k in keys)}) DO NOTHING"
        elif mode == "merge":
            insert, delete = self._merge_sql(insert, in_range, source, names, types)
        statements = [sql for sql in (delete, insert) if sql]
        if mode == "scd2":
            statements = _scd2.statements(
                _q,
                dest=dest,
                source=source,
                names=names,
                values=[_value_sql(n, types[n], checks[n]) for n in names],
                keys=keys,
                flag=self.s["hard_delete"],
                in_range=in_range,
                at=f"TIMESTAMP '{_scd2.version_time()}'",
                key_cast=lambda k: f"CAST(s.{_q(k)} AS {types[k].base})",
            )

        def run_range(start: int, end: int) -> int:
            count = 0
            for sql in statements:
                count = self._execute(sql, (start, end))
            return count  # the last statement's: the INSERT

        applied, refused = 0, list[tuple[int, str]]()
        if candidates:
            applied, refused = apply_bisecting(
                self.cursor,
                run_range,
                low,
                high + 1,
                is_row_error=_is_row_error,
                message_of=lambda exc: self._name_target(_message(exc)),
                prepare=lambda: self._prepare(source, dest, names, types, loaded),
                one_by_one=lambda start, end: self._one_by_one(source, statements, start, end),
            )
        if mode == "replace" and existed:
            self._swap(dest)
        rejects = self._letters(source, refused)
        written = applied if mode in ("insert_only", "scd2") else candidates - len(rejects)
        screened = [
            self.origins.reject(self.s["step"], self.table, keys, row, message)
            for row, message in self.origins.screened
        ]
        rejects = screened + rejects
        return Published(written, staged - written - len(rejects), rejects)

    def _one_by_one(
        self, source: str, statements: list[str], start: int, end: int
    ) -> tuple[int, list[tuple[int, str]]]:
        """Apply staged rows `[start, end)` one at a time in one server-side loop (each row
        in a subtransaction of its own), noting the refused ones: one round trip, where
        bisecting a range with many refused rows takes several per row."""
        log = _q(f"_beam_etl_refused_{self.token}")
        if not self.refused_log:
            self._execute(f"CREATE TEMP TABLE {log} (r bigint, m text) ON COMMIT DROP")
            self.refused_log = True
        row = _q(ROW_COLUMN)
        run = "".join(
            f"EXECUTE $beam_etl${sql.replace('%s', '$1', 1).replace('%s', '$2', 1)}$beam_etl$ "
            "USING r, r + 1; GET DIAGNOSTICS n = ROW_COUNT; "
            for sql in statements
        )
        self._execute(
            "DO $$DECLARE r bigint; n bigint; total bigint := 0; m text; d text; BEGIN "
            f"FOR r IN SELECT {row} FROM {source} WHERE {row} >= {int(start)} "
            f"AND {row} < {int(end)} ORDER BY 1 LOOP BEGIN {run}total := total + n; "
            "EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN "
            "GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL; "
            f"INSERT INTO {log} VALUES (r, CASE WHEN d <> '' THEN m || ' (' || d || ')' "
            "ELSE m END); END; END LOOP; "
            f"INSERT INTO {log} VALUES (NULL, total::text); END$$"
        )
        self.cursor.execute(f"DELETE FROM {log} RETURNING r, m")
        logged = self.cursor.fetchall()
        total = sum(int(m) for r, m in logged if r is None)  # what the last statements counted
        return total, sorted((r, self._name_target(m)) for r, m in logged if r is not None)

    def _prepare(self, source, dest, names, types, loaded) -> None:
        """Once a range was refused: take out, set-based, the staged rows the target is sure
        to refuse (NULL in a NOT NULL column, a value out of range or changed on the way, a
        failed CHECK, a key an existing row holds; then a key repeated within an appended
        load), then index the row numbers for the bisection of the rest."""
        flag = self.s["hard_delete"]
        kept = f"s.{_q(flag)} IS NOT TRUE" if flag else "TRUE"
        relation = self.table.rpartition(".")[2]
        checks = [
            (
                f"s.{_q(n)} IS NULL AND {kept}",
                _literal(
                    f'null value in column "{n}" of relation "{relation}" violates not-null '
                    "constraint"
                ),
            )
            for n in names
            if types[n].not_null
        ]
        for check in (_overflow, _exactness):
            checks += [c for n in names if (c := check(n, loaded[n], *types[n][:2]))]
        row = _q(ROW_COLUMN)
        queries = [refusals_sql(source, row, checks)] if checks else []
        queries += self._failed_checks(source, dest, names, types, kept)
        keys = self._unique_keys(dest)
        if self.s["mode"] == "append":  # appended keys an existing row holds: all refused
            queries += [
                self._taken_key(source, dest, types, *k) for k in keys if k[1] <= set(names)
            ]
        self._take_out(source, self._refusals(queries))
        if self.s["mode"] in ("append", "replace") and self._repeats_decide(dest, names, keys):
            index, _, columns = keys[0]
            values = [f"CAST(s.{_q(c)} AS {types[c].base})" for c in columns]
            message = _duplicate_message(self._name_target(index), columns, "d.k")
            repeats = unique_violations_sql(source, row, values, message)
            self._take_out(source, self._refusals([repeats]))
        self._execute(f"CREATE INDEX ON {source} ({row})")
        self._execute(f"ANALYZE {source}")

    def _refusals(self, queries: list[str]) -> dict[int, str]:
        """Return the `(row number: message)` the SELECTs `queries` find, the first message
        of a row kept. A query whose cast fails is left out (bisection finds that row)."""
        found: dict[int, str] = {}
        for sql in queries:
            self._execute("SAVEPOINT beam_etl_check")
            try:
                self.cursor.execute(sql)
            except Exception as exc:
                self._execute("ROLLBACK TO SAVEPOINT beam_etl_check")
                if not _is_row_error(exc):
                    raise
                continue
            for number, message in self.cursor.fetchall():
                found.setdefault(number, message)
            self._execute("RELEASE SAVEPOINT beam_etl_check")
        return found

    def _take_out(self, source: str, found: dict[int, str]) -> None:
        """Keep the staged rows `found` refused (row number: message), and delete them."""
        if found:
            numbers = sorted(found)
            self.taken += self._rows(source, numbers, found)
            self._execute(f"DELETE FROM {source} WHERE {_q(ROW_COLUMN)} = ANY(%s)", (numbers,))

    def _repeats_decide(self, dest: str, names: list[str], keys) -> bool:
        """Whether a key repeated within the load is sure to be refused for all but its first
        row: `dest` has one unique key, loaded, and nothing else (a trigger, a foreign or an
        exclusion key) could still refuse that first row after the checks."""
        if len(keys) != 1 or not keys[0][1] <= set(names):
            return False
        self.cursor.execute(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
            "AND NOT tgisinternal) + (SELECT count(*) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype IN ('f', 'x'))",
            (dest, dest),
        )
        return self.cursor.fetchone()[0] == 0

    def _unique_keys(self, dest: str) -> list[tuple[str, frozenset[str], list[str]]]:
        """Return the unique indexes of `dest`: name, columns as a set and in order; an
        index on expressions, or a partial one, with no columns (it matches no load)."""
        self.cursor.execute(
            "SELECT c.relname, array_agg(a.attname ORDER BY k.n), "
            "i.indpred IS NULL AND i.indexprs IS NULL FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) "
            "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique GROUP BY c.relname, i.indpred, "
            "i.indexprs",
            (dest,),
        )
        return [
            (name, frozenset(columns if plain else ["?"]), columns)
            for name, columns, plain in self.cursor.fetchall()
        ]

    def _taken_key(self, source, dest, types, index: str, _: frozenset, columns) -> str:
        """Return a SELECT of `(row number, message)` of staged rows whose key `columns`
        (of the unique index `index`) a row of `dest` already holds."""
        named = ", ".join(
            f"CAST(s.{_q(c)} AS {types[c].base}) AS k{i}" for i, c in enumerate(columns)
        )
        match = " AND ".join(f"t.{_q(c)} = v.k{i}" for i, c in enumerate(columns))
        message = _duplicate_message(self._name_target(index), columns, "v.k")
        return (
            f"SELECT v.r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} AS r, {named} "
            f"FROM {source} s) AS v WHERE EXISTS (SELECT 1 FROM {dest} t WHERE {match})"
        )

    def _failed_checks(self, source, dest, names, types, kept) -> list[str]:
        """Return SELECTs of `(row number, message)` of staged rows a CHECK constraint of
        `dest` refuses (its expression false on the values as the column would hold them)."""
        self.cursor.execute(
            "SELECT c.conname, pg_get_expr(c.conbin, c.conrelid), array_agg(a.attname) "
            "FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
            "AND a.attnum = ANY(c.conkey) WHERE c.conrelid = to_regclass(%s) "
            "AND c.contype = 'c' GROUP BY c.conname, c.conbin, c.conrelid",
            (dest,),
        )
        relation = self.table.rpartition(".")[2]
        queries = []
        for name, expression, columns in self.cursor.fetchall():
            if not set(columns) <= set(names):
                continue  # a column the load leaves to its default
            values = ", ".join(f"CAST(s.{_q(c)} AS {types[c].base}) AS {_q(c)}" for c in columns)
            shown = self._name_target(name).replace("'", "''")
            message = f'\'new row for relation "{relation}" violates check constraint "{shown}"\''
            queries.append(
                f"SELECT __beam_etl_r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} "
                f"AS __beam_etl_r, {values} FROM {source} s WHERE {kept}) AS v "
                f"WHERE ({expression}) IS FALSE"
            )
        return queries

    def _rows(
        self, source: str, numbers: list[int], messages: dict[int, str]
    ) -> list[tuple[int, dict[str, Any], str]]:
        """Return `(row number, staged row, message)` of the staged rows `numbers`."""
        row = _q(ROW_COLUMN)
        self.cursor.execute(f"SELECT * FROM {source} WHERE {row} = ANY(%s)", (numbers,))
        names = [c.name for c in self.cursor.description]
        rows = [dict(zip(names, values)) for values in self.cursor.fetchall()]
        return [(r[ROW_COLUMN], r, messages[r[ROW_COLUMN]]) for r in rows]

    def _letters(self, source: str, refused: list[tuple[int, str]]) -> list[Any]:
        """Return the dead letters of the rows checks took out and bisection refused, in
        staging order."""
        found = self.taken + self._rows(source, [n for n, _ in refused], dict(refused))
        return [
            self.origins.reject(self.s["step"], self.table, self.s["keys"], row, message)
            for _, row, message in sorted(found, key=lambda item: item[0])
        ]

    def _merge_sql(self, insert, in_range, source, names, types):
        keys, flag = self.s["keys"], self.s["hard_delete"]
        others = [n for n in names if n not in keys]
        conflict = f" ON CONFLICT ({', '.join(_q(k) for k in keys)}) DO "
        conflict += (
            "UPDATE SET " + ", ".join(f"{_q(n)} = EXCLUDED.{_q(n)}" for n in others)
            if others
            else "NOTHING"
        )
        if not flag:
            return insert + conflict, None
        match = " AND ".join(f"t.{_q(k)} = CAST(s.{_q(k)} AS {types[k].base})" for k in keys)
        delete = (
            f"DELETE FROM {self.target} t USING {source} s "
            f"WHERE {match} AND s.{_q(flag)} IS TRUE AND {in_range}"
        )
        return insert + f" AND s.{_q(flag)} IS NOT TRUE" + conflict, delete

    def _name_target(self, message: str) -> str:
        """Return a database message with the replacement table called by the target's name."""
        return message.replace(f"_beam_etl_new_{self.token}", self.table.rpartition(".")[2])

    def _columns_of(self, relation: str) -> dict[str, str]:
        self.cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (relation,),
        )
        return dict(self.cursor.fetchall())

    def _new_like(self) -> str:
        schema = self.table.rpartition(".")[0]
        new = _q_in(schema, f"_beam_etl_new_{self.token}")
        self._execute(f"CREATE TABLE {new} (LIKE {self.target} INCLUDING ALL)")
        return new

    def _swap(self, new: str) -> None:
        """Make `new` the target: readers see the old table until commit, then the new one.

        Indexes (and their constraints) get the old table's names back.
        """
        schema, _dot, name = self.table.rpartition(".")
        old = f"_beam_etl_old_{self.token}"
        names = self._indexes(self.target)
        renames = [(self._indexes(new).get(d), n) for d, n in names.items()]
        self._execute(f"ALTER TABLE {self.target} RENAME TO {_q(old)}")
        self._execute(f"ALTER TABLE {new} RENAME TO {_q(name)}")
        self._keep_sequences(_q_in(schema, old))
        self._execute(f"DROP TABLE {_q_in(schema, old)}")
        for current, wanted in renames:
            if current and current != wanted:
                self._execute(f"ALTER INDEX {_q_in(schema, current)} RENAME TO {_q(wanted)}")

    def _keep_sequences(self, old: str) -> None:
        """Hand the old table's `serial` sequences to the new one (their defaults use them)."""
        self.cursor.execute(
            "SELECT d.objid::regclass::text, a.attname FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.refobjid = to_regclass(%s) AND d.deptype = 'a'",
            (old,),
        )
        for sequence, column in self.cursor.fetchall():  # regclass text comes quoted
            self._execute(f"ALTER SEQUENCE {sequence} OWNED BY {self.target}.{_q(column)}")

    def _indexes(self, relation: str) -> dict[str, str]:
        """Return index name by definition (without index and table names)."""
        self.cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)",
            (relation,),
        )
        return {
            f"{d.startswith('CREATE UNIQUE')}:{d.split(' USING ', 1)[-1]}": n
            for n, d in self.cursor.fetchall()
        }

    def _describe(self, relation: str) -> dict[str, _Column]:
        """Return the columns of `relation` by name: type, type to cast to, NOT NULL."""
        self.cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
            "CASE WHEN b.typnamespace = 'pg_catalog'::regnamespace "
            "THEN 'pg_catalog.' || quote_ident(b.typname) ELSE format_type(b.oid, NULL) END, "
            "a.attnotnull FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (relation,),
        )
        return {name: _Column(*rest) for name, *rest in self.cursor.fetchall()}


def _q(name: str) -> str:
    return quote_identifier(name, "postgres")


def _q_in(schema: str, name: str) -> str:
    return quote_identifier(f"{schema}.{name}" if schema else name, "postgres")


class WriteToPostgres(beam.PTransform):
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

    OUTPUTS: ClassVar[tuple[str, ...]] = ("error",)

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
        keys = check_write_args(
            table, mode, primary_key, hard_delete_column, dedup_sort, schema_drift, on_reject
        )
        quote_identifier(table, "postgres")
        self.config = make_config(
            "postgres",
            dsn=dsn,
            dsn_env=dsn_env,
            host=host,
            port=port,
            database=database,
            user=user,
            password_env=password_env,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
        self.table = table
        self.run_id = run_id or new_run_id()
        self.settings = {
            "mode": mode,
            "keys": keys,
            "hard_delete": hard_delete_column,
            "dedup_sort": dedup_sort,
            "create_table": create_table,
            "drift": schema_drift,
            "on_reject": on_reject,
            "run_id": self.run_id,
            "keep_state": bool(keep_state),
        }
        self.keep_state = bool(keep_state)
        self.staging_path = staging_path
        self.gates: tuple = ()  # set by the spec builder: quality checks that must pass first

    def state_store(self) -> keptstate.DatabaseState:
        """Return where this sink keeps the run's state (with `keep_state`)."""
        return keptstate.DatabaseState("postgres", self.config)

    def expand(self, batches):
        self.staging = folder = staging_folder(self.staging_path, self.table)
        if self.settings["mode"] == "scd2":
            batches = batches | "RowHash" >> beam.Map(
                _scd2.with_row_hash, self.settings["hard_delete"]
            )
        publish = _PgPublish(self.config, self.table, {**self.settings, "step": self.label})
        written, error = batches | StageAndPublishDb(
            folder, publish, step=self.label, gates=self.gates
        )
        return WithErrors(written, error)
