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

from beam_etl.core.batches import HIDDEN_PREFIX, LINE_COLUMN
from beam_etl.core.coders import RecordBatchCoder  # noqa: F401  (registers the batch coder)

_MIX: Final = np.uint64(0x9E3779B97F4A7C15)
_NULL: Final = np.uint64(0x5BD1E9955BD1E995)
#: One fixed random 64-bit word per byte value (tabulation hashing); the seed never changes.
_BYTES: Final = np.random.default_rng(0x5EED_BEA3).integers(0, 2**64, 256, dtype=np.uint64)


def _avalanche(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, element-wise: every input bit flips about half the output."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return `array` as one array, dictionary encoding undone."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _as_bytes(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return `array` as large_binary: text and binary as they are, other values as text."""
    array = _flat(array)
    kind = array.type
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        try:
            array = pc.cast(array, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # no text form: use Python's
            array = pa.array([None if v is None else repr(v) for v in array.to_pylist()])
    return (
        array.view(pa.large_binary())
        if pa.types.is_large_string(array.type)
        else pc.cast(
            array.view(pa.binary()) if pa.types.is_string(array.type) else array, pa.large_binary()
        )
    )


@functools.lru_cache(maxsize=8)
def _positions(length: int) -> np.ndarray:
    """Return a mixed 64-bit word per byte position 0 .. length-1 (cached per length bucket)."""
    size = 1 << max(6, (length - 1).bit_length())
    return _avalanche(np.arange(1, size + 1, dtype=np.uint64))


def text_hash(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return a stable 64-bit hash of every value of `array` (its bytes, or its text form),
    vectorized: a sum of per-byte random words times a mix of the position, then avalanched,
    so that reordered bytes (`1221` / `2112`) do not collide. Nulls share one hash."""
    array = _as_bytes(array)
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
    with np.errstate(over="ignore"):
        hashes = lengths.astype(np.uint64) * _MIX
        total = int(lengths.sum())
        if len(data) and total:
            base = int(offsets[0])
            position = np.arange(total, dtype=np.int64)
            position -= np.repeat(starts - base, lengths)
            weighted = _BYTES[data[base : base + total]]
            weighted *= _positions(int(lengths.max()))[position]
            nonempty = lengths > 0
            hashes[nonempty] += np.add.reduceat(weighted, (starts - base)[nonempty])
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, _avalanche(hashes), _NULL)


def value_hash(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return a stable 64-bit hash of every value of `array`: numbers, booleans, dates and
    times by their 64-bit value (no text form to build: ~10x faster than `text_hash`), others
    as `text_hash`. Integers of any width hash alike, as do floats; an integer and a float of
    equal value do not (nor do they in `text_hash`: `5` and `5.0`). Nulls share one hash."""
    array = _flat(array)
    kind = array.type
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        values = pc.cast(array, pa.int64()).fill_null(0).to_numpy().view(np.uint64)
    elif pa.types.is_floating(kind):
        values = pc.cast(array, pa.float64()).fill_null(0).to_numpy().view(np.uint64)
    elif (
        pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_time(kind)
        or pa.types.is_duration(kind)
    ):
        width = pa.int64() if kind.bit_width == 64 else pa.int32()
        values = array.view(width).cast(pa.int64()).fill_null(0).to_numpy().view(np.uint64)
    else:
        return text_hash(array)
    with np.errstate(over="ignore"):
        hashed = _avalanche(values + _MIX)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, hashed, _NULL)


def fast_row_hash(data: pa.RecordBatch | pa.Table, columns: list[str] | None = None) -> np.ndarray:
    """Return a stable 64-bit hash of every row's values in `columns` (default: the visible,
    non-nested ones), by `value_hash`: the row hash of snapshot diffs and SCD2 versions."""
    if columns is None:
        columns = [
            field.name
            for field in data.schema
            if not (field.name.startswith(HIDDEN_PREFIX) or pa.types.is_nested(field.type))
        ]
    combined = np.zeros(data.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            combined = combined * np.uint64(1000003) ^ value_hash(data.column(column))
    return _avalanche(combined)


def columns_hash(data: pa.RecordBatch | pa.Table, columns: list[str]) -> np.ndarray:
    """Return a stable 64-bit hash of every row's values in `columns` (in that order)."""
    combined = np.zeros(data.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            combined = combined * np.uint64(1000003) ^ text_hash(data.column(column))
    return combined


def row_hash(data: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Return a stable 64-bit hash of every row's visible, non-nested values."""
    shown = [
        field.name
        for field in data.schema
        if not (field.name.startswith(HIDDEN_PREFIX) or pa.types.is_nested(field.type))
    ]
    return _avalanche(columns_hash(data, shown))


def tie_hash(data: pa.RecordBatch | pa.Table) -> pa.Array | None:
    """Return the content hash that breaks ties between duplicates with no origin line: a
    row's `row_hash` where its line is unknown, null where it is known; None when every row
    has a line. The same for a row however it was batched."""
    names = data.schema.names
    if LINE_COLUMN in names and not data.column(LINE_COLUMN).null_count:
        return None
    hashes = pa.array(row_hash(data))
    if LINE_COLUMN not in names:
        return hashes
    known = data.column(LINE_COLUMN)
    if isinstance(known, pa.ChunkedArray):
        known = known.combine_chunks()
    return pc.if_else(pc.is_valid(known), pa.scalar(None, pa.uint64()), hashes)


def key_buckets(
    batch: pa.RecordBatch, columns: list[str], buckets: int, by_value: bool = False
) -> np.ndarray:
    """Return the bucket (0 .. buckets-1) of every row, from a stable hash of its key columns
    (`by_value`: `fast_row_hash` of them, numbers by value rather than text)."""
    hashed = fast_row_hash(batch, columns) if by_value else columns_hash(batch, columns)
    return (hashed % np.uint64(buckets)).astype(np.int64)


def decoded(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Return `column` with dictionary encoding undone (batches may bring other dictionaries,
    which grouping and joining cannot mix)."""
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    return column


def key_columns(batch: pa.RecordBatch | pa.Table, columns: list[str] | None) -> list[str]:
    return columns or [n for n in batch.schema.names if not n.startswith(HIDDEN_PREFIX)]


def split_by_key(
    columns: list[str] | None, buckets: int, batch: pa.RecordBatch, by_value: bool = False
) -> Iterator[tuple[int, pa.RecordBatch]]:
    if batch.num_rows == 0:
        return
    assigned = key_buckets(batch, key_columns(batch, columns), buckets, by_value)
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
