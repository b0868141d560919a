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

KEEP: Final = ("first", "last")
_INDEX: Final = "__beam_etl_index"
_MIX: Final = np.uint64(0x9E3779B97F4A7C15)


def _text_hash(array: pa.Array) -> np.ndarray:
    """Return a stable 64-bit hash of every value of `array` (its text form), vectorized."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    array = (
        pc.cast(array, pa.large_string()).combine_chunks()
        if isinstance(array, pa.ChunkedArray)
        else pc.cast(array, pa.large_string())
    )
    count = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[
        array.offset : array.offset + count + 1
    ]
    data_buffer = array.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = lengths.astype(np.uint64) * _MIX
    if len(data) and lengths.sum():
        spans = np.repeat(starts, lengths)
        position = np.arange(offsets[0], offsets[-1], dtype=np.int64) - spans
        values = data[offsets[0] : offsets[-1]].astype(np.uint64)
        weighted = values * (position.astype(np.uint64) * np.uint64(2654435761) + np.uint64(97))
        nonempty = lengths > 0
        sums = np.add.reduceat(weighted, (starts - offsets[0])[nonempty])
        hashes[nonempty] ^= sums * np.uint64(0xBF58476D1CE4E5B9)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, hashes, np.uint64(0x5BD1E995))


def key_buckets(batch: pa.RecordBatch, columns: list[str], buckets: int) -> np.ndarray:
    """Return the bucket (0 .. buckets-1) of every row, from a stable hash of its key columns."""
    combined = np.zeros(batch.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            combined = combined * np.uint64(1000003) ^ _text_hash(batch.column(column))
    return (combined % np.uint64(buckets)).astype(np.int64)


def _key_columns(batch: pa.RecordBatch | pa.Table, columns: list[str] | None) -> list[str]:
    return columns or [n for n in batch.schema.names if not n.startswith(HIDDEN_PREFIX)]


def _split(
    columns: list[str] | None, buckets: int, batch: pa.RecordBatch
) -> Iterator[tuple[int, pa.RecordBatch]]:
    if batch.num_rows == 0:
        return
    assigned = key_buckets(batch, _key_columns(batch, columns), buckets)
    order = np.argsort(assigned, kind="stable")
    counts = np.bincount(assigned, minlength=buckets)
    start = 0
    for bucket in np.flatnonzero(counts):
        rows = order[start : start + counts[bucket]]
        start += int(counts[bucket])
        # `take`, not `slice`: a slice would carry (and pickle) the whole batch's buffers.
        yield int(bucket), batch.take(pa.array(rows))


def survivors(
    table: pa.Table, columns: list[str] | None, keep: str, order_by: str | None
) -> pa.Table:
    """Return one row per key of `table`: the first (or last) by `order_by`, then file, line.

    Nulls in `order_by` never win over values. Deterministic: the result does not depend on
    how the rows were batched or ordered.
    """
    keys = _key_columns(table, columns)
    direction = "ascending" if keep == "first" else "descending"
    table = table.append_column(_INDEX, pa.array(np.arange(table.num_rows)))
    sort_keys = [(order_by, direction)] if order_by else []
    for hidden in (FILE_COLUMN, LINE_COLUMN):
        if hidden in table.schema.names:
            if pa.types.is_dictionary(table.schema.field(hidden).type):
                index = table.schema.get_field_index(hidden)
                table = table.set_column(index, hidden, pc.cast(table.column(hidden), pa.string()))
            sort_keys.append((hidden, direction))
    # Rows still tied (no origin lines, e.g. from a database) are ordered by their content.
    sort_keys += [
        (field.name, "ascending")
        for field in table.schema
        if not field.name.startswith(HIDDEN_PREFIX)
        and field.name != order_by
        and not pa.types.is_nested(field.type)
    ]
    sort_keys.append((_INDEX, "ascending"))
    placed = [(name, order, "at_end") for name, order in sort_keys]
    ranked = table.take(pc.sort_indices(table, sort_keys=placed))
    ranked = ranked.set_column(
        ranked.schema.get_field_index(_INDEX), _INDEX, pa.array(np.arange(ranked.num_rows))
    )
    firsts = ranked.group_by(keys, use_threads=False).aggregate([(_INDEX, "min")])
    chosen = pc.sort_indices(firsts.column(f"{_INDEX}_min"))
    rows = pc.take(firsts.column(f"{_INDEX}_min"), chosen)
    return ranked.take(rows).drop_columns([_INDEX])


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
        import functools

        return (
            batches
            | "Bucket" >> beam.FlatMap(functools.partial(_split, self.columns, self.buckets))
            | "Group" >> beam.GroupByKey()
            | "Survivors"
            >> beam.ParDo(
                _DedupeBucketFn(self.label, self.columns, self.keep, self.order_by, self.batch_rows)
            )
        )
