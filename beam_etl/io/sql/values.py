"""Arrow values on their way into a database: column types, what a database cannot store
exactly (refused before loading), and the text forms bulk loads read.
"""

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import HIDDEN_PREFIX
from beam_etl.core.errors import ConnectorError
from beam_etl.core.sqltypes import NoColumnTypeError, column_type


def sql_type(data_type: pa.DataType, dialect: str, *, key: bool = False) -> str:
    """Return the column type a load makes for an Arrow type in `dialect` (`postgres`,
    `mysql` or `sqlite`; see `beam_etl.core.sqltypes`).

    `key`: the column is part of a primary key (MySQL needs a bounded type there).

    Raises:
        ConnectorError: no column type holds the Arrow type (lists, structs, ...).
    """
    try:
        return column_type(data_type, dialect, key=key, purpose="load").name
    except NoColumnTypeError as exc:
        raise ConnectorError(str(exc)) from exc


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
    """Yield a mask and a message for each fault found in `column`: a fault no value can have
    is ruled out from the column's bytes or range first (one numpy pass), without a mask."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        data, offsets = _text_bytes(column)
        ascii_only = data is not None and (not len(data) or int(data.max()) < 0x80)
        if not ascii_only and not _valid_utf8(column):
            yield pa.array([not _decodes(v) for v in _raw(column)]), "text is not valid UTF-8"
        if dialect == "postgres" and (data is None or (len(data) and int(data.min()) == 0)):
            yield pc.match_substring(column, "\x00"), "PostgreSQL text cannot hold NUL (0x00)"
        longest = None  # in bytes: a bound of the characters
        if max_chars is not None and offsets is not None:
            longest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0
        if max_chars is not None and (longest is None or longest > max_chars):
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
            least, most = pc.min_max(ticks).values()
            if least.is_valid and least.as_py() < _YEAR_1 * per_day:
                yield pc.less(ticks, _YEAR_1 * per_day), "before year 1, which cannot be loaded"
            if dialect == "mysql" and most.is_valid and most.as_py() >= _YEAR_10000 * per_day:
                too_late = pc.greater_equal(ticks, _YEAR_10000 * per_day)
                yield too_late, "after year 9999, which MySQL cannot store"


def _text_bytes(column: pa.Array) -> tuple[Any, Any]:
    """The bytes a text column's values span and its offsets (numpy views; None, None when
    not at hand)."""
    if not len(column):
        return np.empty(0, np.uint8), np.zeros(1, np.int64)
    _, offsets_buffer, data_buffer = column.buffers()
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    count = column.offset + len(column) + 1
    if offsets_buffer is None or offsets_buffer.size < count * np.dtype(width).itemsize:
        return None, None
    offsets = np.frombuffer(offsets_buffer, width, count=count)[column.offset :]
    if data_buffer is None or offsets[-1] == offsets[0]:
        return np.empty(0, np.uint8), offsets
    return np.frombuffer(data_buffer, np.uint8)[int(offsets[0]) : int(offsets[-1])], offsets


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


def fits_decimal(staged: pa.DataType, precision: int, scale: int) -> bool:
    """Whether every value of `staged` fits decimal(precision, scale) without rounding (the
    checks before a load skip what cannot be refused)."""
    if pa.types.is_decimal(staged):
        return staged.scale <= scale and staged.precision - staged.scale <= precision - scale
    if pa.types.is_integer(staged):
        widest = (
            2**staged.bit_width - 1
            if pa.types.is_unsigned_integer(staged)
            else 2 ** (staged.bit_width - 1)
        )
        return len(str(widest)) <= precision - scale
    return False
