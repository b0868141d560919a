"""Arrow batches as PostgreSQL's binary `COPY` format, built column by column in Arrow.

The server parses binary `COPY` about a third faster than CSV (no text to number, date or
timestamp conversion: measured 1.9 s against 2.95 s for the same 3M rows of the benchmark's
orders table), and Arrow builds it without a Python loop over rows: each column becomes two
binary arrays, the 4-byte length of each field (-1 for NULL) and the field's bytes, and
`binary_join_element_wise` lays the fields of a row side by side; the joined array's value
buffer is then the rows of the `COPY` stream, in order. Runs of fixed-width bytes (the field
count, every length, the values of fixed-width columns without nulls) are first laid side by
side as one packed numpy record a row, each value written big-endian straight into its field
(one pass a column), so that the join has few inputs (its cost grows with their number: 19
inputs for the benchmark's 9 columns took 0.6 s for 3M rows, 8 take 0.3 s).

A column is encoded for the type of the column it goes into (`pg_type`, as `format_type`
names it), only where the binary form is the value itself: integers, floats, booleans,
text (text, varchar, char, json, jsonb), bytea, dates, timestamps (with and without zone)
and times. Anything else (numeric, uuid, arrays, domains ...) makes `encoder` return None, and
the caller sends CSV instead.
"""

import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.io.sql.values import UnloadableError, in_microseconds

HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER: Final = struct.pack("!h", -1)
_EPOCH_DAYS: Final = 10_957  # 2000-01-01 in days from 1970-01-01
_EPOCH_US: Final = _EPOCH_DAYS * 86_400_000_000
_NULL: Final = b"\xff\xff\xff\xff"
_INT16: Final = np.dtype(">i2")
_INT32: Final = np.dtype(">i4")
_INTS: Final = {"bigint": 8, "integer": 4, "smallint": 2}
_FLOATS: Final = {"double precision": 8, "real": 4}
_TEXT: Final = re.compile(r"text|character varying(\(\d+\))?|character(\(\d+\))?|json|jsonb")
_TIMESTAMP: Final = re.compile(r"timestamp(\(\d\))? with(out)? time zone")
_TIME: Final = re.compile(r"time(\(\d\))?( without time zone)?")

_JOIN: Final = pc.JoinOptions(null_handling="replace", null_replacement="")
# A column -> (each field's length: an int when every field has it, else big-endian int32s,
# -1 for null; the fields' values: a numpy array of numbers written big-endian at their width
# where no value is null, else a binary array of their bytes).
Field = Callable[[pa.Array], tuple["int | np.ndarray", "np.ndarray | pa.Array"]]


def _fixed(width: int, dtype: str) -> Field:
    """Encode a column of fixed-width numbers as big-endian `dtype` of `width` bytes."""

    def encode(column: pa.Array) -> tuple[int | np.ndarray, np.ndarray | pa.Array]:
        filled = column.fill_null(0) if column.null_count else column
        values = filled.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        if not column.null_count:
            return width, values
        # A null field has no bytes, only its length of -1: a binary array with nulls.
        rows = np.ascontiguousarray(values.astype(_big_endian(values.dtype), copy=False))
        data = _as_binary(rows.view(np.uint8), width, len(column))
        data = pc.if_else(column.is_valid(), data, pa.scalar(None, pa.binary()))
        return _lengths(column, width), data

    return encode


def _big_endian(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype


def _lengths(column: pa.Array, width: int | None = None) -> np.ndarray:
    """Return each field's length as a big-endian int32, -1 where the value is null."""
    n = len(column)
    if width is not None:
        sizes = np.full(n, width, dtype=">i4")
    else:
        sizes = pc.binary_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        sizes = sizes.astype(">i4")
    if column.null_count:
        sizes[column.is_null().to_numpy(zero_copy_only=False)] = -1
    return sizes


def _as_binary(values: np.ndarray, width: int, n: int) -> pa.Array:
    """Return a binary array of `n` values of `width` bytes each, laid out in `values`."""
    data = pa.py_buffer(values)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, data])
    return fixed.cast(pa.binary())


def _bytes(prefix: bytes = b"") -> Field:
    """Encode text or binary as its bytes (jsonb: after its version byte)."""

    def encode(column: pa.Array) -> tuple[int | np.ndarray, np.ndarray | pa.Array]:
        data = column.cast(pa.large_binary() if _large(column.type) else pa.binary())
        if prefix:
            data = pc.binary_join_element_wise(pa.scalar(prefix, data.type), data, b"")
        return _lengths(data), data

    return encode


def _large(t: pa.DataType) -> bool:
    return pa.types.is_large_string(t) or pa.types.is_large_binary(t)


def _shifted(shift: int, to_int: Callable[[pa.Array], pa.Array], width: int) -> Field:
    """Encode dates, timestamps, times as integers counted from 2000-01-01 (`shift`)."""
    dtype = "<i4" if width == 4 else "<i8"
    fixed = _fixed(width, dtype)

    def encode(column: pa.Array) -> tuple[int | np.ndarray, np.ndarray | pa.Array]:
        numbers = to_int(column)
        if shift:
            numbers = pc.subtract(numbers, pa.scalar(shift, numbers.type))
        return fixed(numbers)

    return encode


def _days(column: pa.Array) -> pa.Array:
    return column.cast(pa.date32()).view(pa.int32())


def _micros(column: pa.Array) -> pa.Array:
    column = in_microseconds(column)
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("us", column.type.tz)).view(pa.int64())
    return column.cast(pa.time64("us")).view(pa.int64())


def _field(arrow: pa.DataType, pg_type: str) -> Field | None:
    """Return how a column of `arrow` type is encoded for a `pg_type` column, None when it
    cannot be sent in binary form (the caller sends CSV)."""
    t = pa.types
    if t.is_dictionary(arrow):
        inner = _field(arrow.value_type, pg_type)
        return None if inner is None else (lambda c: inner(c.dictionary_decode()))
    if t.is_null(arrow):
        return lambda c: (_lengths(c, 0), pa.nulls(len(c), pa.binary()))  # every field -1
    if t.is_integer(arrow) and pg_type in _INTS:
        width = _INTS[pg_type]
        if arrow.bit_width // 8 > width or (
            t.is_unsigned_integer(arrow) and arrow.bit_width // 8 >= width
        ):
            return None  # might not fit: CSV, where the server refuses what does not
        return _fixed(width, f"<i{width}")
    if t.is_floating(arrow) and arrow.bit_width // 8 == _FLOATS.get(pg_type):
        # Same width only: the server rounds a narrower column's text itself (and refuses
        # what overflows it), and widens the shortest text of a float32, not its bits.
        return _fixed(arrow.bit_width // 8, f"<f{arrow.bit_width // 8}")
    if t.is_boolean(arrow) and pg_type == "boolean":
        as_byte = _fixed(1, "<u1")
        return lambda c: as_byte(c.cast(pa.uint8()))
    if (t.is_string(arrow) or t.is_large_string(arrow)) and _TEXT.fullmatch(pg_type):
        return _bytes(b"\x01" if pg_type == "jsonb" else b"")
    if (t.is_binary(arrow) or t.is_large_binary(arrow)) and pg_type == "bytea":
        return _bytes()
    if t.is_date(arrow) and pg_type == "date":
        return _shifted(_EPOCH_DAYS, _days, 4)
    if t.is_timestamp(arrow) and _TIMESTAMP.fullmatch(pg_type):
        return _shifted(_EPOCH_US, _micros, 8)
    if t.is_time(arrow) and _TIME.fullmatch(pg_type):
        return _shifted(0, _micros, 8)
    return None


def encoder(
    schema: pa.Schema, pg_types: list[str]
) -> Callable[[pa.RecordBatch], pa.Buffer | bytes] | None:
    """Return a function rendering a batch of `schema` as binary `COPY` rows (no header or
    trailer) for columns of `pg_types` (in the same order), or None when some column cannot
    be sent in binary form."""
    fields = [_field(f.type, pg) for f, pg in zip(schema, pg_types)]
    if any(f is None for f in fields) or not fields:
        return None
    count = len(fields)

    def encode(batch: pa.RecordBatch) -> pa.Buffer | bytes:
        n = batch.num_rows
        if n == 0:
            return b""
        pieces: list[pa.Array] = []
        run: list[tuple[np.dtype, Any]] = [(_INT16, count)]  # fixed-width fields, in order
        for field, column in zip(fields, batch.columns):
            try:
                lengths, data = field(column)  # type: ignore[misc]
            except (pa.ArrowInvalid, OverflowError) as exc:
                raise UnloadableError(
                    f"a value cannot be sent to postgres as it is: {exc}"
                ) from exc
            run.append((_INT32, lengths))
            if isinstance(data, np.ndarray):
                run.append((_big_endian(data.dtype), data))
            else:  # variable width, or nulls: the run ends, the bytes are a piece of their own
                pieces += [_run(run, n), data]
                run = []
        if run:
            pieces.append(_run(run, n))
        if any(_large(p.type) for p in pieces):
            pieces = [p.cast(pa.large_binary()) for p in pieces]
        if len(pieces) == 1:
            return _values(pieces[0])
        rows = pc.binary_join_element_wise(*pieces, pa.scalar(b"", pieces[0].type), options=_JOIN)
        return _values(rows)

    return encode


def _run(fields: list[tuple[np.dtype, Any]], n: int) -> pa.Array:
    """One binary array of `n` values: the fixed-width `fields` (a type, and a value for every
    row or one for each) side by side, as one packed record a row."""
    layout = np.dtype([(f"f{i}", dtype) for i, (dtype, _) in enumerate(fields)])
    rows = np.empty(n, layout)
    for i, (_, values) in enumerate(fields):
        rows[f"f{i}"] = values  # converted to the field's big-endian type as it is copied
    return _as_binary(rows.view(np.uint8), layout.itemsize, n)


def _values(rows: pa.Array) -> pa.Buffer:
    """Return the bytes of a binary array's values, back to back (what the COPY sends), as a
    buffer (no copy: the COPY stream copies each piece it sends once)."""
    offsets_type = np.int64 if pa.types.is_large_binary(rows.type) else np.int32
    offsets = np.frombuffer(rows.buffers()[1], dtype=offsets_type)
    start, end = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
    return rows.buffers()[2][start:end]


def stream(
    batches: Iterator[pa.RecordBatch], encode: Callable[[pa.RecordBatch], pa.Buffer | bytes]
) -> Iterator[pa.Buffer | bytes]:
    """Yield the whole binary `COPY` stream of `batches`: header, rows, trailer."""
    yield HEADER
    for batch in batches:
        data = encode(batch)
        if data:
            yield data
    yield TRAILER
