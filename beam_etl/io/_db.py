"""What the PostgreSQL and MySQL connectors share: connection settings with secret passwords,
retries of transient failures, Arrow <-> SQL type mapping, key-range planning, schema drift, and
the stage-then-publish composite with a dead-letter output.

Sinks stage each bundle as Arrow IPC files (hidden origin columns kept, so that a row the
database refuses is reported with its file and line); one publish step, after every bundle has
finished, loads the committed bundles' files into a temporary staging table and applies the
write mode in one transaction. A run that fails before publishing never touches the database,
and a retried bundle's files never reach the publish step.
"""

import functools
import logging
import os
import random
import re
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN, payload_of
from beam_etl.core.config import Secret, first_line, mask_dsn
from beam_etl.core.deadletter import DB_CONSTRAINT, ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ALREADY_PUBLISHED, ROWS_DROPPED, ROWS_WRITTEN, step_counter
from beam_etl.core.publish import (
    DATABASE,
    Pending,
    fault_point,
    new_run_id,
    pending_folder,
    record,
    veto,
)
from beam_etl.io._files import (
    Part,
    StageFn,
    check_gates,
    discard_folder,
    gate_failures,
)
from beam_etl.io._ipcparts import IpcPartWriter
from beam_etl.io._sql import LEDGER_TABLE, check_identifier

_LOG = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["LEDGER_TABLE", "new_run_id"]  # re-exported for the connectors

MODES: Final = ("append", "replace", "merge", "insert_only", "scd2")
DRIFT_POLICIES: Final = ("evolve", "freeze", "discard_columns")
ON_REJECT: Final = ("dead_letter", "fail")
ROW_COLUMN: Final = "__beam_etl_row"  # staging row number: bisects and dedup ties use it
ONE_BY_ONE: Final = 512  # refused ranges this small are applied row by row (see apply_bisecting)


_KV_SECRET: Final = re.compile(r"\bpassword\s*=\s*(?P<pw>'[^']*'|\S+)", re.I)


@dataclass(frozen=True, kw_only=True)
class DbConfig:
    """Where and how to connect; the password and any DSN print as `***`."""

    dialect: str
    host: str = "127.0.0.1"
    port: int = 0
    database: str = ""
    user: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    dsn: Secret | None = None
    connect_timeout: float = 10.0
    statement_timeout: float | None = None
    retries: int = 3
    retry_delay: float = 0.5

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0:
            raise ValueError(f"`connect_timeout` must be positive, not `{self.connect_timeout}`")
        if self.statement_timeout is not None and self.statement_timeout <= 0:
            raise ValueError(
                f"`statement_timeout` must be positive, not `{self.statement_timeout}`"
            )
        if self.retries < 0:
            raise ValueError(f"`retries` must be zero or more, not `{self.retries}`")

    def describe(self) -> str:
        """Return where this connects to, with any password masked."""
        if self.dsn is not None:
            return self.redact(self.dsn.reveal())
        if self.dialect == "sqlite":
            return f"sqlite:{self.database}"
        return f"{self.dialect}://{self.user}@{self.host}:{self.port}/{self.database}"

    def redact(self, text: str) -> str:
        """Return `text` (a driver's message, a DSN) with every form of the password masked:
        URL and `password=` patterns, and the literal password wherever it appears."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return mask_dsn(text)

    def _secrets(self) -> list[str]:
        found = [self.password.reveal()]
        if self.dsn is not None:
            dsn = self.dsn.reveal()
            userinfo = urllib.parse.urlsplit(dsn).netloc.rpartition("@")[0] if "://" in dsn else ""
            if ":" in userinfo:
                raw = userinfo.partition(":")[2]
                found += [raw, urllib.parse.unquote(raw)]
            for match in _KV_SECRET.finditer(dsn):
                found.append(match.group("pw").strip("'"))
        # Longest first; one- or two-character values would mask ordinary text.
        return sorted({value for value in found if len(value) > 2}, key=len, reverse=True)


def make_config(
    dialect: str,
    *,
    dsn: str | None,
    dsn_env: str | None,
    host: str,
    port: int,
    database: str | None,
    user: str,
    password_env: str | None,
    connect_timeout: float,
    statement_timeout: float | None,
) -> DbConfig:
    """Return the connection settings, reading the password or DSN from the environment now.

    Raises:
        ValueError: neither a DSN nor a database is given, or a named variable is unset.
    """
    secret_dsn = Secret(dsn) if dsn else None
    if dsn_env:
        if dsn_env not in os.environ:
            raise ValueError(f"Environment variable `{dsn_env}` (dsn_env) is not set")
        secret_dsn = Secret(os.environ[dsn_env])
    if secret_dsn is None and not database:
        raise ValueError("Give `dsn`, `dsn_env` or `database` to say where to connect")
    password = Secret(os.environ.get(password_env, "")) if password_env else Secret("")
    return DbConfig(
        dialect=dialect,
        host=host,
        port=port,
        database=database or "",
        user=user,
        password=password,
        dsn=secret_dsn,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
    )


def with_retries(
    operation: Callable[[], T],
    *,
    config: DbConfig,
    is_transient: Callable[[BaseException], bool],
    what: str,
) -> T:
    """Run `operation`, retrying transient failures with exponential backoff and jitter.

    Raises:
        ConnectorError: a non-transient failure, or a transient one that outlived the retries;
            the message names `what` and the masked connection, never the password.
    """
    for attempt in range(config.retries + 1):
        try:
            return operation()
        except ConnectorError:
            raise
        except Exception as exc:
            message = config.redact(first_line(exc))
            if not is_transient(exc) or attempt == config.retries:
                kind = "after retries " if is_transient(exc) else ""
                # `from None`: a driver's original error may quote a DSN with its password.
                raise ConnectorError(
                    f"{what} failed {kind}on `{config.describe()}`: {type(exc).__name__}: {message}"
                ) from None
            delay = config.retry_delay * (2**attempt) * (1 + random.random() / 2)
            _LOG.warning(
                "%s on `%s` hit a transient error (%s); retry %d of %d in %.1f s",
                what,
                config.describe(),
                message,
                attempt + 1,
                config.retries,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def sql_type(data_type: pa.DataType, dialect: str, *, key: bool = False) -> str:
    """Return the column type for an Arrow type in `dialect` (`postgres` or `mysql`).

    `key`: the column is part of a primary key (MySQL needs a bounded type there).

    Raises:
        ConnectorError: no column type holds the Arrow type (lists, structs, ...).
    """
    t = data_type.value_type if pa.types.is_dictionary(data_type) else data_type
    pg = dialect == "postgres"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        bits = t.bit_width + (1 if pa.types.is_unsigned_integer(t) else 0)
        if not pg and pa.types.is_unsigned_integer(t):
            return {9: "tinyint unsigned", 17: "smallint unsigned", 33: "int unsigned"}.get(
                bits, "bigint unsigned"
            )
        names = (("smallint", 16), ("integer", 32), ("bigint", 64))
        return next((name for name, width in names if bits <= width), "numeric(20,0)")
    if pa.types.is_floating(t):
        return ("real" if pg else "float") if t.bit_width <= 32 else "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({min(t.precision, 1000 if pg else 65)},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "text" if pg else ("varchar(255)" if key else "longtext")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytea" if pg else ("varbinary(255)" if key else "longblob")
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        if pg:
            return "timestamp with time zone" if t.tz else "timestamp without time zone"
        return "datetime(6)"  # MySQL keeps no zone: tz-aware values are stored in UTC
    if pa.types.is_time(t):
        return "time" if pg else "time(6)"
    raise ConnectorError(f"No {dialect} column type for Arrow type `{data_type}`")


def schema_drift(
    loaded: pa.Schema, target_columns: list[str], policy: str, table: str
) -> tuple[list[pa.Field], list[str]]:
    """Return (columns to add to the target, loaded columns to discard) under `policy`.

    Columns of the target missing from the load are allowed under every policy (they get
    their default). Hidden origin columns are ignored.

    Raises:
        ConnectorError: `freeze` and the load has columns the target lacks (all are listed).
    """
    known = set(target_columns)
    new = [f for f in loaded if f.name not in known and not f.name.startswith(HIDDEN_PREFIX)]
    if not new:
        return [], []
    if policy == "evolve":
        return new, []
    if policy == "discard_columns":
        return [], [f.name for f in new]
    listed = ", ".join(f"`{f.name}` ({f.type})" for f in new)
    raise ConnectorError(
        f"Schema of `{table}` is frozen but the load has columns it lacks: {listed}; "
        "add them to the table, or use schema_drift `evolve` or `discard_columns`"
    )


def text_for_load(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` with columns a CSV writer cannot render loadably turned into text.

    Binary becomes PostgreSQL/MySQL hex text (`\\x...`), dictionaries their values,
    nanosecond times microseconds (`unloadable` refused any that had nanoseconds), zoned
    timestamps their UTC time without a zone (the CSV writer renders a zone's local time with
    its offset, which a column without zone would drop, and formats zoned values ~25x slower
    than plain ones): the loading sessions run in UTC, so both column kinds read them right.
    """
    arrays = []
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        column = in_microseconds(column)
        if pa.types.is_timestamp(column.type) and column.type.tz:
            column = column.view(pa.timestamp(column.type.unit))  # the UTC wall time
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            column = pa.array(
                [None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string()
            )
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


_DAY: Final = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_YEAR_1: Final = -719_162  # 0001-01-01, in days from 1970-01-01
_YEAR_10000: Final = 2_932_897  # 10000-01-01


class UnloadableError(Exception):
    """A row the loader cannot hand to the database as it is (see `unloadable`)."""


def unloadable(
    batch: pa.RecordBatch, dialect: str, max_chars: dict[str, int] | None = None
) -> dict[int, str]:
    """Return, by row index, why rows of `batch` cannot be stored exactly in `dialect`.

    Refused: text that is not valid UTF-8, text with a NUL character (PostgreSQL), NaN and
    infinite floats (MySQL), timestamps and times with nanoseconds (both databases keep
    microseconds), dates and timestamps before year 1 (or from year 10000 on MySQL), and text
    longer than `max_chars[column]`. Vectorised; rows are visited only once one is found.
    """
    found: dict[int, str] = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if name.startswith(HIDDEN_PREFIX):
            continue
        for mask, message in _column_faults(column, dialect, (max_chars or {}).get(name)):
            for index in pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist():
                found.setdefault(index, f"column `{name}`: {message}")
    return found


def _column_faults(
    column: pa.Array, dialect: str, max_chars: int | None
) -> Iterator[tuple[pa.Array, str]]:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if not _valid_utf8(column):
            yield pa.array([not _decodes(v) for v in _raw(column)]), "text is not valid UTF-8"
        if dialect == "postgres":
            yield pc.match_substring(column, "\x00"), "PostgreSQL text cannot hold NUL (0x00)"
        if max_chars is not None:
            yield pc.greater(pc.utf8_length(column), max_chars), f"longer than {max_chars}"
    elif pa.types.is_floating(kind) and dialect == "mysql":
        yield pc.invert(pc.is_finite(column)), "MySQL cannot store NaN or infinity"
    elif pa.types.is_timestamp(kind) or pa.types.is_time64(kind) or pa.types.is_date(kind):
        unit = "s" if pa.types.is_date32(kind) else getattr(kind, "unit", "ms")
        ticks = column.view(pa.int32() if pa.types.is_date32(kind) else pa.int64())
        ticks = ticks.cast(pa.int64())
        if unit == "ns":
            whole = pc.multiply(pc.divide(ticks, 1000), 1000)
            yield pc.not_equal(whole, ticks), "has nanoseconds; the database keeps microseconds"
        if not pa.types.is_time64(kind) and unit != "ns":
            per_day = 1 if pa.types.is_date32(kind) else _DAY[unit]
            yield pc.less(ticks, _YEAR_1 * per_day), "before year 1, which cannot be loaded"
            if dialect == "mysql":
                too_late = pc.greater_equal(ticks, _YEAR_10000 * per_day)
                yield too_late, "after year 9999, which MySQL cannot store"


def _valid_utf8(column: pa.Array) -> bool:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _raw(column: pa.Array) -> list[bytes | None]:
    return column.view(
        pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
    ).to_pylist()


def _decodes(value: bytes | None) -> bool:
    try:
        _ = value is None or value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def readable_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Return the rows of `batch` as dicts: text that is not UTF-8 shown with escapes, dates
    and times Python cannot hold (before year 1, after 9999) as their ISO text."""
    arrays = []
    for column in batch.columns:
        kind = column.type
        if pa.types.is_temporal(kind):
            try:
                column.to_pylist()
            except (OverflowError, ValueError):
                column = pc.cast(column, pa.string())
        elif (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and not _valid_utf8(
            column
        ):
            texts = [
                None if v is None else v.decode("utf-8", "backslashreplace") for v in _raw(column)
            ]
            column = pa.array(texts, pa.string())
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pylist()


def loadable(
    batches: Iterator[pa.RecordBatch], dialect: str, max_chars: dict[str, int] | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield `batches`; raise `UnloadableError` at the first that holds an `unloadable` row
    (a fast path gives up, and the staging path refuses that row alone)."""
    for batch in batches:
        if unloadable(batch, dialect, max_chars):
            raise UnloadableError(f"a row cannot be loaded into {dialect} as it is")
        yield batch


def in_microseconds(column: pa.Array) -> pa.Array:
    """Return `column` in microseconds when it holds nanosecond timestamps or times (the
    databases keep microseconds; `unloadable` refuses values that would lose digits)."""
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        return pc.cast(column, pa.timestamp("us", kind.tz), safe=False)
    if pa.types.is_time64(kind) and kind.unit == "ns":
        return pc.cast(column, pa.time64("us"), safe=False)
    return column


def staging_folder(staging_path: str | None, target: str) -> str:
    """Return a fresh local folder for the staged parts of one write to `target`."""
    base = staging_path or os.path.join(tempfile.gettempdir(), ".beam_etl-staging")
    return os.path.join(base, f"{target}-{uuid.uuid4().hex[:12]}")


def read_parts(parts: list[Part]) -> Iterator[pa.RecordBatch]:
    """Yield the staged batches of every part, in order."""
    for path, _ in parts:
        with pa.ipc.open_stream(path) as reader:
            yield from reader


def parts_schema(parts: list[Part]) -> pa.Schema | None:
    """Return the unified schema of the staged parts, or None when nothing was staged."""
    schemas = []
    for path, _ in parts:
        with pa.ipc.open_stream(path) as reader:
            schemas.append(reader.schema)
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else None


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Return `batch` with the columns of `schema` in its order (missing ones null)."""
    arrays = []
    for f in schema:
        if f.name in batch.schema.names:
            column = batch.column(f.name)
            arrays.append(column if column.type == f.type else pc.cast(column, f.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class Published(NamedTuple):
    """What a publish did: rows written, rows dropped on purpose, rows the database refused;
    `already`: the ledger says this run id was published before, so nothing changed."""

    written: int
    dropped: int
    rejects: list[DeadLetter]
    already: bool = False


def check_expected(result: Published, expect: Published | None, table: str) -> None:
    """Raise `ConnectorError` when a publish would not do what its trial found (someone changed
    `table` between the run's prepare and its publish): then nothing is published."""
    if expect is None or expect.already:
        return
    found = (result.written, sorted(r.origin for r in result.rejects))
    tried = (expect.written, sorted(r.origin for r in expect.rejects))
    if found != tried:
        raise ConnectorError(
            f"`{table}` changed while the run was deciding: it would now take "
            f"{result.written:,} row(s) and refuse {len(result.rejects):,}, where the run's "
            f"trial took {expect.written:,} and refused {len(expect.rejects):,}; nothing was "
            "published to it"
        )


class _PublishFn(beam.DoFn):
    """Publishes at once, or (under `deferred_publishing`) tries the load in a transaction that
    is rolled back, sends the refused rows to the dead letters, and records a pending publish
    that the launcher runs after the verdict (see `io/_publish.py`)."""

    def __init__(
        self,
        publish: Callable[..., Published],
        step: str,
        folder: str,
        pending: str | None = None,
    ):
        self._publish = publish
        self._step = step
        self._folder = folder
        self._pending = pending

    def process(self, parts: list[Part], gates=()):
        parts = sorted(parts)
        failed = gate_failures(gates)
        if self._pending is None:
            check_gates(gates, self._step)
            result = self._publish(parts)
            discard_folder(self._folder)
        elif failed:  # the launcher's verdict reads the veto; nothing is tried
            veto(self._pending, self._step, failed)
            result = Published(sum(rows for _, rows in parts), 0, [])
        else:
            result = self._publish(parts, commit=False)
            expect = result._replace(rejects=[r._replace(payload=None) for r in result.rejects])
            pending = Pending(self._step, DATABASE, self._publish, parts, self._folder, expect)
            record(self._pending, pending)
            fault_point("after_prepare")
        if result.already:
            step_counter(self._step, ALREADY_PUBLISHED).inc()
        step_counter(self._step, ROWS_WRITTEN).inc(result.written)
        step_counter(self._step, ROWS_DROPPED).inc(result.dropped)
        for letter in result.rejects:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        yield result.written


class StageAndPublishDb(beam.PTransform):
    """Stage every bundle as IPC files, then call `publish(parts)` once, after all bundles.

    Output: `(written, error)`: one element (rows written), and the `DeadLetter`s of rows the
    database refused.
    """

    def __init__(
        self,
        folder: str,
        publish: Callable[[list[Part]], Published],
        *,
        step: str,
        gates: tuple = (),
    ) -> None:
        super().__init__()
        self._folder = folder
        self._publish = publish
        self._step = step
        self._gates = tuple(gates)

    def expand(self, batches):
        parts = (
            batches
            | "Stage"
            >> beam.ParDo(StageFn(functools.partial(IpcPartWriter, keep_origin=True), self._folder))
            | "AwaitBundles" >> beam.combiners.ToList()
        )
        publish_fn = _PublishFn(self._publish, self._step, self._folder, pending_folder())
        publish = beam.ParDo(publish_fn)
        if self._gates:
            gates = self._gates | "MergeGates" >> beam.Flatten()
            publish = beam.ParDo(publish_fn, gates=beam.pvalue.AsList(gates))
        out = parts | "Publish" >> publish.with_outputs(ERROR, main=OUTPUT)
        return out[OUTPUT], out[ERROR]


def check_write_args(
    table: str,
    mode: str,
    primary_key: list[str] | str | None,
    hard_delete_column: str | None,
    dedup_sort: str | None,
    schema_drift: str,
    on_reject: str,
) -> list[str]:
    """Validate a database sink's arguments; return the primary key as a list.

    Raises:
        ValueError: an argument is invalid (named, with its value).
    """
    check_identifier(table.split(".")[-1], "table name")
    for name, value, allowed in (
        ("mode", mode, MODES),
        ("schema_drift", schema_drift, DRIFT_POLICIES),
        ("on_reject", on_reject, ON_REJECT),
    ):
        if value not in allowed:
            raise ValueError(f"Unknown {name} `{value}`; use one of {', '.join(allowed)}")
    keys = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
    for key in keys:
        check_identifier(key, "primary_key column")
    if mode in ("merge", "insert_only", "scd2") and not keys:
        raise ValueError(f"mode `{mode}` needs `primary_key`")
    for name, column in (("hard_delete_column", hard_delete_column), ("dedup_sort", dedup_sort)):
        if column is not None:
            check_identifier(column, name)
            if mode not in ("merge", "scd2"):
                raise ValueError(f"`{name}` applies to mode `merge` only (or `scd2`), not `{mode}`")
    return keys


def apply_bisecting(
    cursor: Any,
    run_range: Callable[[int, int], int],
    low: int,
    high: int,
    *,
    is_row_error: Callable[[BaseException], bool],
    message_of: Callable[[BaseException], str],
    prepare: Callable[[], object] | None = None,
    one_by_one: Callable[[int, int], tuple[int, list[tuple[int, str]]]] | None = None,
) -> tuple[int, list[tuple[int, str]]]:
    """Apply `run_range(start, end)` to staging rows `[low, high)`, isolating refused rows.

    Each range runs inside a savepoint; when the database refuses it for a row-level reason
    (constraint, value out of range), the range is split in halves until single rows remain,
    which are returned as `(row number, message)`. Before the first split, `prepare()` runs
    once: it may take refused rows out set-based and index the row numbers, so that the
    rest costs about `2 * rejects * log2(rows)` indexed statements. A refused range of at
    most `ONE_BY_ONE` rows goes to `one_by_one(start, end)` instead, when given: it applies
    the rows one at a time in one round trip, returning what `run_range` added up and the
    refused rows. Other errors propagate.

    Returns:
        The sum of `run_range`'s results over applied ranges, and the refused rows.
    """
    applied, refused = 0, []
    pending = [(low, high)]
    while pending:
        start, end = pending.pop()
        cursor.execute("SAVEPOINT beam_etl_range")
        try:
            applied += run_range(start, end)
        except Exception as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT beam_etl_range")
            if not is_row_error(exc):
                raise
            if prepare is not None:  # once: then the same range again, without what it found
                run_once, prepare = prepare, None
                run_once()
                pending.append((start, end))
            elif one_by_one is not None and end - start <= ONE_BY_ONE:
                count, found = one_by_one(start, end)
                applied += count
                refused += found
            elif end - start <= 1:
                refused.append((start, message_of(exc)))
            else:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]  # lower half first: keeps order
        else:
            cursor.execute("RELEASE SAVEPOINT beam_etl_range")
    return applied, refused


def refusals_sql(source: str, row: str, checks: list[tuple[str, str]]) -> str:
    """Return a SELECT of `(row number, message)` for the staged rows of `source` (alias `s`)
    that a check refuses; `checks` are `(condition, message)` SQL pairs, the first true one
    names the row's message. CASE keeps the order, so a cast in a later check never sees a
    row an earlier check refused."""
    cases = " ".join(f"WHEN {condition} THEN {message}" for condition, message in checks)
    return (
        f"SELECT r, m FROM (SELECT s.{row} AS r, CASE {cases} END AS m FROM {source} s) AS c "
        "WHERE m IS NOT NULL"
    )


def unique_violations_sql(
    source: str, row: str, values: list[str], message: str, where: str = "TRUE"
) -> str:
    """Return a SELECT of `(row number, message)` for the staged rows whose `values` (SQL on
    alias `s`, none null) repeat an earlier staged row's: a unique key refuses all but the
    first. `message` is SQL on the repeated values, named `k0`, `k1`, ..."""
    named = ", ".join(f"{value} AS k{i}" for i, value in enumerate(values))
    keys = ", ".join(f"k{i}" for i in range(len(values)))
    not_null = " AND ".join(f"{value} IS NOT NULL" for value in values)
    return (
        f"SELECT r, {message} FROM (SELECT v.*, ROW_NUMBER() OVER (PARTITION BY {keys} "
        f"ORDER BY r) AS n FROM (SELECT s.{row} AS r, {named} FROM {source} s "
        f"WHERE {not_null} AND {where}) AS v) AS d WHERE n > 1"
    )


class StagedOrigins:
    """Stages the origin of each row (its file as a small integer code, and its line) and
    numbers the rows.

    A path per row would make staging a narrow table about half again as large.
    """

    FIELDS: Final = (
        pa.field(FILE_COLUMN, pa.int32()),
        pa.field(LINE_COLUMN, pa.int64()),
        pa.field(ROW_COLUMN, pa.int64()),
    )

    def __init__(self, dialect: str | None = None) -> None:
        self.files: list[str] = []
        self._codes: dict[str, int] = {}
        self._rows = 0
        self._dialect = dialect
        #: Rows refused before staging (`unloadable` in `dialect`), with why.
        self.screened: list[tuple[dict[str, Any], str]] = []

    def batches(self, parts: list[Part], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """Yield the staged batches conformed to `schema`, file names replaced by codes;
        rows `unloadable` in the dialect are kept back in `screened`."""
        for batch in read_parts(parts):
            if FILE_COLUMN in batch.schema.names:
                column = batch.column(FILE_COLUMN)
                if not pa.types.is_dictionary(column.type):
                    column = column.dictionary_encode()
                codes = [self._code(name) for name in column.dictionary.to_pylist()]
                encoded = pc.take(pa.array(codes, pa.int32()), column.indices)
                index = batch.schema.get_field_index(FILE_COLUMN)
                batch = batch.set_column(index, FILE_COLUMN, encoded)
            batch = conform(batch, schema)
            refused = unloadable(batch, self._dialect) if self._dialect else {}
            if refused:
                indices = sorted(refused)
                rows = readable_rows(batch.take(pa.array(indices, pa.int64())))
                self.screened += [(row, refused[i]) for i, row in zip(indices, rows)]
                kept = np.ones(batch.num_rows, dtype=bool)
                kept[indices] = False
                batch = batch.filter(pa.array(kept))
            # Row numbers from 1 in staging order (cheaper than a server-side sequence).
            numbers = pa.array(np.arange(self._rows + 1, self._rows + 1 + batch.num_rows))
            self._rows += batch.num_rows
            yield batch.set_column(len(schema) - 1, ROW_COLUMN, numbers)

    def _code(self, name: str) -> int:
        if name not in self._codes:
            self._codes[name] = len(self.files)
            self.files.append(name)
        return self._codes[name]

    def reject(
        self, step: str, table: str, keys: list[str], row: dict[str, Any], message: str
    ) -> DeadLetter:
        """Return the `db_constraint` dead letter for a staged row the database refused."""
        code = row.get(FILE_COLUMN)
        source = self.files[code] if code is not None else table
        payload = payload_of(row)  # hidden columns (origin, row number) left out
        key = ",".join(str(row.get(k)) for k in keys) if keys else None
        return DeadLetter(step, DB_CONSTRAINT, message, source, row.get(LINE_COLUMN), key, payload)


def numbered(parts: list[Part], names: list[str]) -> Iterator[pa.RecordBatch]:
    """Yield the columns `names` of the staged parts (null where a part lacks one) with the
    row numbers `StagedOrigins` gives them when it screens nothing out."""
    schema, rows = parts_schema(parts), 0
    if schema is None:
        return
    wanted = pa.schema([schema.field(n) for n in dict.fromkeys(names)])  # each name once
    for batch in read_parts(parts):
        numbers = pa.array(np.arange(rows + 1, rows + 1 + batch.num_rows))
        rows += batch.num_rows
        yield conform(batch, wanted).append_column(ROW_COLUMN, numbers)


def last_rows(
    batches: Iterator[pa.RecordBatch], keys: list[str], sort: str | None
) -> pa.Array | None:
    """Return the staging row numbers (`ROW_COLUMN`) to keep so that every non-null key is
    loaded once: per key the row with the largest `sort` (nulls lowest), ties and no `sort`
    to the last staged; every row with a null key is kept (the target refuses or keeps it as
    it would). None when no key repeats: keep everything.

    Arrow compares bytes, which is at least as fine as any database's equality, so a database
    dedupe run after this one still sees what it would have seen without it (less of it)."""
    names = [*keys, *([sort] if sort and sort not in keys else []), ROW_COLUMN]
    tables = [pa.Table.from_batches([b.select(names)]) for b in batches if b.num_rows]
    if not tables:
        return None
    table = pa.concat_tables(tables).combine_chunks()
    rows = table.num_rows
    order = [(k, "ascending", "at_end") for k in keys]
    if sort and sort not in keys:
        order.append((sort, "descending", "at_end"))
    order.append((ROW_COLUMN, "descending", "at_end"))
    ordered = table.take(pc.sort_indices(table, sort_keys=order))
    starts = np.ones(rows, dtype=bool)  # where a new key begins in key order
    if rows > 1:
        same = np.ones(rows - 1, dtype=bool)
        for key in keys:
            column = ordered.column(key)
            equal = pc.equal(column.slice(1), column.slice(0, rows - 1)).fill_null(False)
            same &= equal.to_numpy(zero_copy_only=False)
        starts[1:] = ~same
    if starts.all():
        return None
    return ordered.column(ROW_COLUMN).filter(pa.array(starts)).combine_chunks()
