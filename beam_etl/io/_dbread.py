"""Reading a database table or query in key ranges: the shared half of the PostgreSQL and
MySQL sources. Each dialect gives a `Dialect` (how to connect, what is transient, how to read
one key range into Arrow batches); planning the ranges, retries, errors, origins and metrics
are here, once.
"""

from collections.abc import Iterator
from typing import Any, ClassVar

import apache_beam as beam
import pyarrow as pa

from beam_etl.batches import split_compact, with_origin
from beam_etl.config import first_line
from beam_etl.deadletter import OUTPUT
from beam_etl.errors import ConnectorError
from beam_etl.io._db import DbConfig, with_retries
from beam_etl.io._sql import check_identifier, quote_identifier
from beam_etl.metrics import ROWS_READ, step_counter


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
        self, connection: Any, sql: str, params: list[Any], source: str, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """Yield the result of `sql` (parameters `params`) as Arrow batches."""
        raise NotImplementedError

    def describe(self, connection: Any, sql: str, source: str) -> pa.Schema:
        """Return the Arrow schema `sql` reads as, without reading rows."""
        raise NotImplementedError

    def quote(self, name: str) -> str:
        return quote_identifier(name, self.name)


def fetch_one(dialect: Dialect, config: DbConfig, sql: str) -> tuple:
    """Return the first row of `sql`, on a connection of its own."""
    connection = dialect.connect(config)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()
    finally:
        connection.close()


class PlanRangesFn(beam.DoFn):
    """Yields the key ranges to read: one `(None, None)` without a partition column."""

    def __init__(self, dialect: Dialect, config: DbConfig, query: str, column, parts, lower, upper):
        self._dialect, self._config, self._query, self._column = dialect, config, query, column
        self._parts, self._lower, self._upper = parts, lower, upper

    def process(self, _: Any) -> Iterator[tuple[int | None, int | None]]:
        low, high = self._lower, self._upper
        if self._column and self._parts > 1 and (low is None or high is None):
            column = self._dialect.quote(self._column)
            sql = f"SELECT min({column}), max({column}) FROM ({self._query}) AS q"
            found = with_retries(
                lambda: fetch_one(self._dialect, self._config, sql),
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
    """Reads one key range of the query into batches of about `batch_rows` rows."""

    def __init__(self, dialect: Dialect, step, config, query, column, source, batch_rows):
        self._dialect, self._step, self._config, self._query = dialect, step, config, query
        self._column, self._source, self._batch_rows = column, source, batch_rows

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)

    def process(self, key_range: tuple[int | None, int | None]) -> Iterator[pa.RecordBatch]:
        # A failure fails the bundle; the runner discards its output before retrying it.
        connection = self._dialect.connect(self._config)
        try:
            sql = f"SELECT * FROM ({self._query}) AS q"
            params: list[Any] = []
            if self._column:
                column = self._dialect.quote(self._column)
                where, params = range_condition(column, *key_range)
                if params:  # the query's own `%` must survive the driver's formatting
                    sql = sql.replace("%", "%%")
                sql = f"{sql} WHERE {where}"
            batches = self._dialect.read(connection, sql, params, self._source, self._batch_rows)
            for batch in rebatch(batches, self._batch_rows):
                self._rows_read.inc(batch.num_rows)
                yield with_origin(batch, self._source, None)
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

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)
    DIALECT: ClassVar[Dialect]

    def _setup_read(self, config, table, query, column, parts, lower, upper, batch_rows) -> None:
        self.config = config
        self.source, self.query = source_query(table, query, self.DIALECT.name)
        check_read_args(column, parts, batch_rows, lower, upper)
        self.partition_column = column
        self.num_partitions = parts
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
        sample = read_locally([stage], [(None, None)], rows, pa.schema([]))
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
        plan = PlanRangesFn(
            self.DIALECT,
            self.config,
            self.query,
            self.partition_column,
            self.num_partitions,
            *self.bounds,
        )
        read = ReadRangeFn(
            self.DIALECT,
            self.label,
            self.config,
            self.query,
            self.partition_column,
            self.source,
            self.batch_rows,
        )
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "PlanRanges" >> beam.ParDo(plan)
            | "Distribute" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(read)
        )


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


def rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Yield the batches regrouped into batches of about `rows` rows (the last may be smaller)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield from split_compact(pa.Table.from_batches(pending), rows)
            pending, count = [], 0
    if count:
        yield from split_compact(pa.Table.from_batches(pending), rows)


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
    if not isinstance(parts, int) or parts < 1:
        raise ValueError(f"`num_partitions` must be a positive integer, not `{parts}`")
    if parts > 1 and column is None:
        raise ValueError("`num_partitions` above 1 needs `partition_column`")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"`batch_rows` must be a positive integer, not `{batch_rows}`")
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"`lower_bound` `{lower}` is above `upper_bound` `{upper}`")
