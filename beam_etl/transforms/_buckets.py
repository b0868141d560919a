"""Spreading batches over hash buckets of their key columns: the fast way to shuffle by key.

All rows with equal keys land in the same bucket whatever batch, file or worker they come
from, so a GroupByKey on the bucket brings every copy of a key together while only a few
sub-batches per input batch cross the shuffle.
"""

import functools
from collections.abc import Iterator
from typing import Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batches import HIDDEN_PREFIX
from beam_etl.coders import RecordBatchCoder  # noqa: F401  (registers the batch coder)

_MIX: Final = np.uint64(0x9E3779B97F4A7C15)


def text_hash(array: pa.Array) -> np.ndarray:
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
            combined = combined * np.uint64(1000003) ^ text_hash(batch.column(column))
    return (combined % np.uint64(buckets)).astype(np.int64)


def key_columns(batch: pa.RecordBatch | pa.Table, columns: list[str] | None) -> list[str]:
    return columns or [n for n in batch.schema.names if not n.startswith(HIDDEN_PREFIX)]


def split_by_key(
    columns: list[str] | None, buckets: int, batch: pa.RecordBatch
) -> Iterator[tuple[int, pa.RecordBatch]]:
    if batch.num_rows == 0:
        return
    assigned = key_buckets(batch, key_columns(batch, columns), buckets)
    counts = np.bincount(assigned, minlength=buckets)
    # One `take` into bucket order, then zero-copy slices: the batch coder (Arrow IPC) writes
    # only each slice's own range when the shuffle encodes it.
    ordered = batch.take(pa.array(np.argsort(assigned, kind="stable")))
    start = 0
    for bucket in np.flatnonzero(counts):
        yield int(bucket), ordered.slice(start, int(counts[bucket]))
        start += int(counts[bucket])


class GroupByKeyBuckets(beam.PTransform):
    """Group sub-batches by a hash bucket of `columns`: every copy of a key meets in one group.

    Input: record batches. Output: `(bucket, iterable of sub-batches)`. The sub-batches cross
    the shuffle in Arrow IPC (`RecordBatchCoder`), not pickled.
    """

    def __init__(self, columns: list[str] | None, buckets: int) -> None:
        super().__init__()
        self._columns = columns
        self._buckets = buckets

    def expand(self, batches):
        return (
            batches
            | "Bucket"
            >> beam.FlatMap(
                functools.partial(split_by_key, self._columns, self._buckets)
            ).with_output_types(tuple[int, pa.RecordBatch])
            | "Group" >> beam.GroupByKey()
        )
