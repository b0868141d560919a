"""Reading a database table or query in key ranges: the shared half of the PostgreSQL and
MySQL sources. Each dialect gives a `Dialect` (how to connect, what is transient, how to read
one key range into Arrow batches); planning the ranges, retries, errors, origins and metrics
are here, once.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import split_compact, with_origin
from beam_etl.core.batching import BatchSizer, check_batch_rows
from beam_etl.core.config import first_line
from beam_etl.core.deadletter import ERROR, NULL_CURSOR, OUTPUT, reject_all
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.core.publish import fault_point
from beam_etl.core.state import current_state
from beam_etl.io._increment import (
    CursorIncrement,
    from_state,
    in_window,
    load_hashes,
    minus,
    save_hashes,
    to_state,
    typed_bound,
    window_condition,
)
from beam_etl.io.sql.identifiers import check_identifier, quote_identifier
from beam_etl.io.sql.options import DbConfig
from beam_etl.io.sql.retry import with_retries
from beam_etl.keyed.buckets import row_hash  # the shared row hash


class Dialect:
    """What a database source needs from its driver; subclasses are small and picklable."""

    name = ""

    def connect(self, config: DbConfig) -> Any:
        """Return a read-only-capable connection (the driver's own retries included)."""
        raise NotImplementedError

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying may help."""
        raise NotImplementedError

    def read(
        self, connection: Any, sql: str, params: list[Any], source: str, sizer: BatchSizer
    ) -> Iterator[pa.RecordBatch]:
        """Yield the result of `sql` (parameters `params`) as Arrow batches (of about
        `sizer.rows()` rows where the dialect builds them row by row)."""
        raise NotImplementedError

    def describe(self, connection: Any, sql: str, source: str) -> pa.Schema:
        """Return the Arrow schema `sql` reads as, without reading rows."""
        raise NotImplementedError

    def quote(self, name: str) -> str:
        return quote_identifier(name, self.name)

    def integer_key(self, connection: Any, table: str) -> tuple[str, int] | None:
        """Return `table`'s one-column integer primary key and its estimated row count, for a
        read split by default; None: read it whole."""
        return None


def fetch_one(dialect: Dialect, config: DbConfig, sql: str, params: list | None = None) -> tuple:
    """Return the first row of `sql`, on a connection of its own."""
    connection = dialect.connect(config)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params or None)
            return cursor.fetchone()
    finally:
        connection.close()


#: A table split by default (`num_partitions` unset) gets a key range per this many rows...
AUTO_RANGE_ROWS: Final = 250_000
#: ... and at most this many ranges.
AUTO_MAX_RANGES: Final = 16


class PlanRangesFn(beam.DoFn):
    """Yields the key ranges to read: one `(None, None)` without a partition column."""

    def __init__(
        self,
        dialect: Dialect,
        config: DbConfig,
        query: str,
        column,
        parts,
        lower,
        upper,
        params=(),
        split_table: str | None = None,
    ):
        """`split_table`: look for its integer key and split on it (`num_partitions` unset)."""
        self._dialect, self._config, self._query, self._column = dialect, config, query, column
        self._parts, self._lower, self._upper = parts, lower, upper
        self._params = list(params)  # of `query`, which is then ready for them (`%` doubled)
        self._split_table = split_table

    def process(self, _: Any) -> Iterator[tuple[int | None, int | None, str | None]]:
        if self._split_table is not None:
            found = with_retries(
                self._find_key,
                config=self._config,
                is_transient=self._dialect.is_transient,
                what="Planning key ranges",
            )
            if found is not None:
                self._column = found[0]
                self._parts = min(AUTO_MAX_RANGES, max(1, -(-found[1] // AUTO_RANGE_ROWS)))
        for start, end in self._ranges():
            yield start, end, self._column

    def _find_key(self) -> tuple[str, int] | None:
        connection = self._dialect.connect(self._config)
        try:
            assert self._split_table is not None
            return self._dialect.integer_key(connection, self._split_table)
        finally:
            connection.close()

    def _ranges(self) -> Iterator[tuple[int | None, int | None]]:
        low, high = self._lower, self._upper
        if self._column and self._parts > 1 and (low is None or high is None):
            column = self._dialect.quote(self._column)
            sql = f"SELECT min({column}), max({column}) FROM ({self._query}) AS q"
            found = with_retries(
                lambda: fetch_one(self._dialect, self._config, sql, self._params),
                config=self._config,
                is_transient=self._dialect.is_transient,
                what="Planning key ranges",
            )
            low = found[0] if low is None else low
            high = found[1] if high is None else high
        if any(v is not None and not isinstance(v, int) for v in (low, high)):
            raise ConnectorError(f"partition_column `{self._column}` must hold integers")
        if not self._column or low is None or high is None:
            yield (None, None)
        else:
            yield from plan_ranges(low, high, self._parts)


class ReadRangeFn(beam.DoFn):
    """Reads one key range of the query into batches of about `batch_rows` rows (None: sized
    by bytes, see `core.batching`)."""

    def __init__(
        self,
        dialect: Dialect,
        step,
        config,
        query,
        column,
        source,
        batch_rows,
        params=(),
        window: "Window | None" = None,
    ):
        self._dialect, self._step, self._config, self._query = dialect, step, config, query
        self._column, self._source, self._batch_rows = column, source, batch_rows
        self._params = list(params)  # of `query`, which is then ready for them (`%` doubled)
        self._window = window

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)
        self._seen = load_hashes(self._window.seen) if self._window else None

    def process(
        self, key_range: tuple[int | None, int | None, str | None]
    ) -> Iterator[pa.RecordBatch]:
        # A failure fails the bundle; the runner discards its output before retrying it.
        connection = self._dialect.connect(self._config)
        try:
            sql = f"SELECT * FROM ({self._query}) AS q"
            params: list[Any] = list(self._params)
            start, end, split_on = key_range  # the column: given, or the table's integer key
            if split_on:
                column = self._dialect.quote(split_on)
                where, extra = range_condition(column, start, end)
                if extra and not params:  # the query's own `%` must survive the formatting
                    sql = sql.replace("%", "%%")
                sql = f"{sql} WHERE {where}"
                params += extra
            sizer = BatchSizer(self._step, rows=self._batch_rows)
            batches = self._dialect.read(connection, sql, params, self._source, sizer)
            kept: list[np.ndarray] = []
            for batch in rebatch(batches, sizer):
                if self._window is not None:
                    batch = self._window.skip_seen(batch, self._seen, kept)
                self._rows_read.inc(batch.num_rows)
                batch = with_origin(batch, self._source, None)
                if self._window is not None and self._window.reject_nulls:
                    batch, letters = self._window.reject_null_cursors(batch, self._step)
                    yield from (beam.pvalue.TaggedOutput(ERROR, letter) for letter in letters)
                yield batch
                fault_point("during_read")
            if self._window is not None and kept:
                save_hashes(self._window.scratch, np.concatenate(kept))
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(
                f"Reading `{self._source}` from `{self._config.describe()}` failed: "
                f"{type(exc).__name__}: {self._config.redact(first_line(exc))}"
            ) from None
        finally:
            connection.close()


class ReadFromDatabase(beam.PTransform):
    """The key-range read of a table or query; subclasses set `DIALECT` and `config`."""

    # Per instance: `on_null: reject` adds `error`.
    OUTPUTS: tuple[str, ...] = (OUTPUT,)
    DIALECT: ClassVar[Dialect]

    incremental: CursorIncrement | None = None

    def _setup_read(
        self, config, table, query, column, parts, lower, upper, batch_rows, incremental=None
    ) -> None:
        self.incremental = CursorIncrement.from_config(incremental) if incremental else None
        if self.incremental is not None and self.incremental.on_null == "reject":
            self.OUTPUTS = (OUTPUT, ERROR)  # rows with a null cursor leave through `error`
        self.config = config
        self.source, self.query = source_query(table, query, self.DIALECT.name)
        check_read_args(column, parts, batch_rows, lower, upper)
        self.partition_column = column
        self.num_partitions = parts
        # No split asked for: a table is split on its integer key where the dialect finds one.
        self.split_table = self.source if table and column is None and parts is None else None
        self.bounds = (lower, upper)
        self.batch_rows = batch_rows

    def sample(self, rows: int | None = 10_000) -> pa.Table:
        """Return the first `rows` rows (None: all) of the table or query, outside a pipeline
        (for previews and `infer-schema`); in the database's order, with no partitioning."""
        from beam_etl.io._local import read_locally

        query = self.query if rows is None else f"SELECT * FROM ({self.query}) AS s LIMIT {rows:d}"
        stage = ReadRangeFn(
            self.DIALECT, self.label, self.config, query, None, self.source, self.batch_rows
        )
        sample = read_locally([stage], [(None, None, None)], rows, pa.schema([]))
        if sample.num_columns:
            return sample
        schema = with_retries(  # no row: the columns still have types
            self._describe,
            config=self.config,
            is_transient=self.DIALECT.is_transient,
            what=f"Describing `{self.source}`",
        )
        return schema.empty_table()

    def _describe(self) -> pa.Schema:
        connection = self.DIALECT.connect(self.config)
        try:
            return self.DIALECT.describe(connection, self.query, self.source)
        finally:
            connection.close()

    def expand(self, pbegin):
        query, params, window = self.query, [], None
        if self.incremental is not None:
            query, params, window = self._increment()
        plan = PlanRangesFn(
            self.DIALECT,
            self.config,
            query,
            self.partition_column,
            self.num_partitions or 1,
            *self.bounds,
            params=params,
            split_table=self.split_table,
        )
        read = ReadRangeFn(
            self.DIALECT,
            self.label,
            self.config,
            query,
            self.partition_column,
            self.source,
            self.batch_rows,
            params=params,
            window=window,
        )
        ranges = (
            pbegin
            | "Start" >> beam.Create([None])
            | "PlanRanges" >> beam.ParDo(plan)
            | "Distribute" >> beam.Reshuffle()
        )
        if window is None or not window.reject_nulls:
            return ranges | "ReadRanges" >> beam.ParDo(read).with_output_types(pa.RecordBatch)
        read_all = ranges | "ReadRanges" >> beam.ParDo(read).with_output_types(
            pa.RecordBatch
        ).with_outputs(ERROR, main=OUTPUT)
        return WithErrors(read_all[OUTPUT], read_all[ERROR])

    def _increment(self) -> tuple[str, list[Any], "Window"]:
        """Return the query limited to this run's cursor window, its parameters and what the
        readers need to skip rows the last run loaded; propose the next state."""
        increment = self.incremental
        assert increment is not None
        state = current_state()
        if state is None:
            raise ValueError(
                f"`incremental` on `{self.label}` needs the state store of "
                "`python -m beam_etl.run`; outside it, filter with `query:` instead"
            )
        before = state.get(self.label) or {}
        column = self.DIALECT.quote(increment.cursor)
        high = increment.end
        found = with_retries(
            lambda: fetch_one(
                self.DIALECT, self.config, f"SELECT max({column}) FROM ({self.query}) AS q"
            ),
            config=self.config,
            is_transient=self.DIALECT.is_transient,
            what=f"Finding the cursor's high mark of `{self.source}`",
        )[0]
        high = typed_bound(high) if high is not None else found
        if "cursor" in before:
            low = minus(from_state(before["cursor"], high), increment.lag)
        else:
            low = typed_bound(increment.initial)
        if high is None and before.get("cursor") is not None:  # the table was emptied
            high = from_state(before["cursor"], low)
        where, params = window_condition(column, low, high, increment.on_null)
        query = f"SELECT * FROM ({self.query.replace('%', '%%')}) AS inc WHERE {where}"
        folder = state.store.data_folder(state.pipeline, self.label)
        seen = os.path.join(folder, "window")
        scratch = os.path.join(folder, f"window.next-{state.run_id}")
        window = Window(
            increment.cursor,
            seen if "cursor" in before else None,
            scratch,
            minus(high, increment.lag),
            increment.on_null == "reject",
        )
        state.propose(self.label, {"cursor": to_state(high), "lag": increment.lag})
        state.promote(scratch, seen)
        return query, params, window


@dataclass(frozen=True)
class Window:
    """What a reader of a cursor increment needs: the rows the last run loaded in the window
    it re-reads (`seen`, hashes), and where to keep this run's window (`scratch`)."""

    cursor: str
    seen: str | None
    scratch: str
    start: Any  # this run's high mark minus the lag: rows from here are re-read next run

    reject_nulls: bool = False  # `on_null: reject`: rows with a null cursor are dead letters

    def reject_null_cursors(self, batch: pa.RecordBatch, step: str) -> tuple[pa.RecordBatch, list]:
        """Return `batch` without its rows whose cursor is null, and their dead letters."""
        null = pc.is_null(batch.column(self.cursor))
        if not pc.any(null).as_py():
            return batch, []
        letters = reject_all(
            batch.filter(null),
            step=step,
            reason=NULL_CURSOR,
            message=f"Cursor column `{self.cursor}` is null (on_null: reject)",
        )
        return batch.filter(pc.invert(null)), letters

    def skip_seen(self, batch: pa.RecordBatch, seen, kept: list) -> pa.RecordBatch:
        """Return `batch` without the rows the last run loaded; remember this run's window."""
        hashes = row_hash(batch)
        kept.append(hashes[in_window(batch, self.cursor, self.start)])
        if seen is None:
            return batch
        new = pc.invert(pc.is_in(pa.array(hashes), value_set=seen))
        return batch.filter(new)


def plan_ranges(low: int, high: int, parts: int) -> list[tuple[int | None, int | None]]:
    """Return `parts` half-open key ranges covering every value (and null) exactly once.

    The first range is open below (and takes nulls), the last open above, so values outside
    `[low, high]` are still read once.
    """
    if parts <= 1 or high <= low:
        return [(None, None)]
    step = max(1, -(-(high - low + 1) // parts))
    cuts = list(range(low + step, high + 1, step))
    starts: list[int | None] = [None, *cuts]
    ends: list[int | None] = [*cuts, None]
    return list(zip(starts, ends))


def range_condition(column: str, start: int | None, end: int | None) -> tuple[str, list[int]]:
    """Return the SQL condition (on the quoted `column`) and parameters for one key range."""
    if start is None and end is None:
        return "TRUE", []
    if start is None:
        return f"({column} < %s OR {column} IS NULL)", [end]  # type: ignore[list-item]
    if end is None:
        return f"{column} >= %s", [start]
    return f"{column} >= %s AND {column} < %s", [start, end]


def rebatch(batches: Iterator[pa.RecordBatch], sizer: BatchSizer) -> Iterator[pa.RecordBatch]:
    """Yield the batches regrouped into batches of about `sizer.rows()` rows (the last may be
    smaller); the sizer learns from every batch that comes in."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        sizer.observe(batch)
        pending.append(batch)
        count += batch.num_rows
        rows = sizer.rows()
        if count >= rows:
            size = _even(count, rows, at_most=sizer.fixed)
            yield from split_compact(pa.Table.from_batches(pending), size)
            pending, count = [], 0
    if count:
        size = _even(count, sizer.rows(), at_most=sizer.fixed)
        yield from split_compact(pa.Table.from_batches(pending), size)


def _even(count: int, rows: int, at_most: bool) -> int:
    """The batch size that cuts `count` rows into equal parts (to a row) of about `rows` each
    (`at_most`: of at most `rows`), so that no sliver of a few rows is left over when `count`
    is just above `rows`."""
    parts = max(1, -(-count // rows) if at_most else round(count / rows))
    return -(-count // parts)


def source_query(table: str | None, query: str | None, dialect: str) -> tuple[str, str]:
    """Return (origin name, SELECT) for a table or a query; exactly one must be given."""
    if (table is None) == (query is None):
        raise ValueError("Give exactly one of `table` and `query`")
    if table is not None:
        return table, f"SELECT * FROM {quote_identifier(table, dialect)}"
    assert query is not None
    if not query.strip():
        raise ValueError("`query` is empty")
    return "query", query.strip().rstrip(";")


def check_read_args(column, parts, batch_rows, lower, upper) -> None:
    """Validate a database source's partitioning arguments (ValueError naming the argument)."""
    if column is not None:
        check_identifier(column, "partition_column")
    if parts is not None and (not isinstance(parts, int) or parts < 1):
        raise ValueError(f"`num_partitions` must be a positive integer, not `{parts}`")
    if parts is not None and parts > 1 and column is None:
        raise ValueError("`num_partitions` above 1 needs `partition_column`")
    check_batch_rows(batch_rows)
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"`lower_bound` `{lower}` is above `upper_bound` `{upper}`")
