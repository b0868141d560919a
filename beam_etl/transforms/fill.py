"""Forward fill within a key, in a stated order, across the whole dataset.

"The previous row" only exists under an explicit order, and rows of one key may sit in any
batch, file or worker: rows are spread over hash buckets of the key (a shuffle of batches,
see `_buckets`), each bucket is sorted by key, order column and origin, and every null takes
the last value seen before it within its key — all vectorized.
"""

from collections.abc import Iterable, Iterator
from typing import ClassVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import FILE_COLUMN, LINE_COLUMN, column_list, split_compact
from beam_etl.core.deadletter import OUTPUT
from beam_etl.keyed.buckets import GroupByKeyBuckets


def _group_starts(table: pa.Table, by: list[str]) -> np.ndarray:
    """Return, for every row of a table sorted by `by`, the index where its key group starts."""
    n = table.num_rows
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for column in by:
        values = table.column(column).combine_chunks()
        after, before = values.slice(1), values.slice(0, n - 1)
        differs = pc.fill_null(pc.not_equal(after, before), True)
        both_null = pc.and_(pc.is_null(after), pc.is_null(before))
        moved = pc.and_(differs, pc.invert(both_null)).to_numpy(zero_copy_only=False)
        change[1:] |= moved
    index = np.arange(n)
    return np.maximum.accumulate(np.where(change, index, 0))


def fill_forward(table: pa.Table, columns: list[str], by: list[str], order_by: str) -> pa.Table:
    """Return `table` sorted by `by`, `order_by`, file, line, with nulls in `columns` replaced by
    the last earlier value of the same key (a null stays null when no earlier value exists)."""
    sort_keys = [(c, "ascending", "at_end") for c in [*by, order_by]]
    for hidden in (FILE_COLUMN, LINE_COLUMN):
        if hidden in table.schema.names:
            if pa.types.is_dictionary(table.schema.field(hidden).type):
                position = table.schema.get_field_index(hidden)
                table = table.set_column(
                    position, hidden, pc.cast(table.column(hidden), pa.string())
                )
            sort_keys.append((hidden, "ascending", "at_end"))
    table = table.take(pc.sort_indices(table, sort_keys=sort_keys))
    starts = _group_starts(table, by)
    index = np.arange(table.num_rows)
    for column in columns:
        values = table.column(column).combine_chunks()
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        last = np.maximum.accumulate(np.where(valid, index, -1))
        source = np.where(valid | (last < starts), index, last)
        position = table.schema.get_field_index(column)
        table = table.set_column(position, column, values.take(pa.array(source)))
    return table


class _FillBucketFn(beam.DoFn):
    def __init__(self, columns: list[str], by: list[str], order_by: str, batch_rows: int):
        self._columns = columns
        self._by = by
        self._order_by = order_by
        self._batch_rows = batch_rows

    def process(self, bucket: tuple[int, Iterable[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
        _, parts = bucket
        table = pa.concat_tables(
            [pa.Table.from_batches([part]) for part in parts], promote_options="permissive"
        )
        filled = fill_forward(table, self._columns, self._by, self._order_by)
        yield from split_compact(filled, self._batch_rows)


class FillForward(beam.PTransform):
    """Fill nulls in `columns` with the previous value of the same key (`by`), in `order_by`.

    Works across the whole input (all batches, files and workers): rows of a key are brought
    together by a hash-bucket shuffle of batches. Within a key, rows are ordered by `order_by`
    (nulls last), then origin file and line. The first rows of a key keep their nulls. Every
    row comes out (rows in = rows out); output order is not kept.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(
        self,
        columns: list[str],
        *,
        by: list[str],
        order_by: str,
        batch_rows: int = 65_536,
        buckets: int = 64,
    ) -> None:
        """Args:
        columns: the columns whose nulls are filled.
        by: key columns; values never flow from one key to another.
        order_by: column giving the order of rows within a key (a date, a sequence number).
        batch_rows: rows per output batch.
        buckets: hash buckets the input is spread over (the shuffle's parallelism).
        """
        super().__init__()
        for name, value in (("columns", columns), ("by", by)):
            column_list(value, name)
        if set(columns) & set(by):
            raise ValueError("A column cannot be both filled (`columns`) and a key (`by`)")
        if not isinstance(order_by, str) or not order_by:
            raise ValueError("`order_by` must name the column that orders rows within a key")
        if buckets < 1:
            raise ValueError(f"`buckets` must be at least 1, not `{buckets}`")
        self.columns = list(columns)
        self.by = list(by)
        self.order_by = order_by
        self.batch_rows = batch_rows
        self.buckets = buckets

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        from beam_etl.transforms.cleaning import check_columns

        check_columns(schema, [*self.columns, *self.by, self.order_by])
        return schema

    def expand(self, batches):
        return (
            batches
            | "Shuffle" >> GroupByKeyBuckets(self.by, self.buckets)
            | "Fill"
            >> beam.ParDo(_FillBucketFn(self.columns, self.by, self.order_by, self.batch_rows))
        )
