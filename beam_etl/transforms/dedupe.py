"""Deduplication across the whole dataset, as a shuffle of batches, not of rows.

Each batch is split by a hash of its key columns into `buckets` sub-batches (vectorized), the
sub-batches are grouped by bucket (every copy of a key lands in the same bucket, whatever the
batch, file or worker it came from), and each bucket is deduplicated with one sort in Arrow.
Only a few thousand elements cross the shuffle, however many rows there are.
"""

from collections.abc import Iterable, Iterator
from typing import ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batches import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN, split_compact
from beam_etl.deadletter import OUTPUT
from beam_etl.metrics import ROWS_DROPPED, step_counter
from beam_etl.transforms._buckets import GroupByKeyBuckets, key_columns

KEEP: Final = ("first", "last")
_INDEX: Final = "__beam_etl_index"
_SORT: Final = "__beam_etl_sort_"


def survivors(
    table: pa.Table, columns: list[str] | None, keep: str, order_by: str | None
) -> pa.Table:
    """Return one row per key of `table`: the first (or last) by `order_by`, then file, line.

    Nulls in `order_by` never win over values. Deterministic: the result does not depend on
    how the rows were batched or ordered.
    """
    keys = key_columns(table, columns)
    direction = "ascending" if keep == "first" else "descending"
    ordering = pa.table({name: table.column(name) for name in keys})
    sort_keys = []
    for name in [order_by] if order_by else []:
        ordering = ordering.append_column(f"{_SORT}order", table.column(name))
        sort_keys.append((f"{_SORT}order", direction))
    for hidden in (FILE_COLUMN, LINE_COLUMN):
        if hidden in table.schema.names:
            ordering = ordering.append_column(f"{_SORT}{hidden}", _sortable(table.column(hidden)))
            sort_keys.append((f"{_SORT}{hidden}", direction))
    # Rows still tied (no origin lines, e.g. from a database) are ordered by their content;
    # rows tied on everything are interchangeable (the sort is stable).
    for field in table.schema:
        if not (
            field.name.startswith(HIDDEN_PREFIX)
            or field.name == order_by
            or pa.types.is_nested(field.type)
        ):
            ordering = ordering.append_column(f"{_SORT}{field.name}", table.column(field.name))
            sort_keys.append((f"{_SORT}{field.name}", "ascending"))
    if not sort_keys:
        sort_keys.append((keys[0], "ascending"))
    placed = [(name, order, "at_end") for name, order in sort_keys]
    # Only the key columns are reordered; the whole table is taken once, at the end.
    order = pc.sort_indices(ordering, sort_keys=placed)
    ranked = (
        ordering.select(keys).take(order).append_column(_INDEX, pa.array(np.arange(len(order))))
    )
    firsts = ranked.group_by(keys, use_threads=False).aggregate([(_INDEX, "min")])
    firsts = firsts.column(f"{_INDEX}_min")
    winners = pc.take(firsts, pc.sort_indices(firsts))
    return table.take(pc.take(order, winners))


def _sortable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return `column` as something `sort_indices` orders: a dictionary becomes value ranks."""
    if not pa.types.is_dictionary(column.type):
        return column
    column = pa.table({"c": column}).unify_dictionaries().column("c")
    if column.num_chunks == 0:
        return pa.chunked_array([], pa.int64())
    ranks = pc.rank(column.chunk(0).dictionary, sort_keys="ascending", tiebreaker="dense")
    return pa.chunked_array(
        [pc.take(ranks, chunk.indices) for chunk in column.chunks], type=ranks.type
    )


class _DedupeBucketFn(beam.DoFn):
    def __init__(self, step: str, columns, keep: str, order_by, batch_rows: int) -> None:
        self._step = step
        self._columns = columns
        self._keep = keep
        self._order_by = order_by
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, bucket: tuple[int, Iterable[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
        _, parts = bucket
        tables = [pa.Table.from_batches([part]) for part in parts]
        table = pa.concat_tables(tables, promote_options="permissive")
        kept = survivors(table, self._columns, self._keep, self._order_by)
        self._dropped.inc(table.num_rows - kept.num_rows)
        yield from split_compact(kept, self._batch_rows)


class DropDuplicates(beam.PTransform):
    """Keep one row per key across the whole input (all batches, files and workers).

    Rows are equal when `columns` are equal (all visible columns when not given; nulls equal
    nulls). The survivor is deterministic, the same on one worker, several or a cluster: the
    first (or last) by `order_by` (a null never wins over a value), ties broken by origin file
    and line. Removed duplicates are counted as dropped. Output order is not kept.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(
        self,
        columns: list[str] | None = None,
        *,
        keep: str = "first",
        order_by: str | None = None,
        batch_rows: int = 65_536,
        buckets: int = 64,
    ) -> None:
        """Args:
        columns: key columns; all visible columns when not given.
        keep: `first` or `last` by `order_by`, then by file and line.
        order_by: column deciding which duplicate survives.
        batch_rows: rows per output batch.
        buckets: hash buckets the input is spread over (the shuffle's parallelism).
        """
        super().__init__()
        if keep not in KEEP:
            raise ValueError(f"`keep` must be one of {', '.join(KEEP)}, not `{keep}`")
        if columns is not None and (not columns or not all(isinstance(c, str) for c in columns)):
            raise ValueError("`columns` must list at least one column name")
        if buckets < 1:
            raise ValueError(f"`buckets` must be at least 1, not `{buckets}`")
        self.columns = list(columns) if columns else None
        self.keep = keep
        self.order_by = order_by
        self.batch_rows = batch_rows
        self.buckets = buckets

    def infer_schema(self, schema):
        from beam_etl.transforms.cleaning import check_columns

        check_columns(schema, [*(self.columns or []), *([self.order_by] if self.order_by else [])])
        return schema

    def expand(self, batches):

        return (
            batches
            | "Shuffle" >> GroupByKeyBuckets(self.columns, self.buckets)
            | "Survivors"
            >> beam.ParDo(
                _DedupeBucketFn(self.label, self.columns, self.keep, self.order_by, self.batch_rows)
            )
        )
