"""Pure casting logic: cast Arrow columns, finding exactly the values that do not convert.

No Beam here. A failing cast is retried on halves of the array until the failing values are
isolated, so the cost is one vectorized cast when every value converts, and about
`2 * len * failures` cast work when a few do not (rejects are expected to be rare).

A value converts only if it keeps its meaning: text that is not a number, a date that does not
exist (`2024-02-30`), a number with more digits than a decimal type holds (`123456789.1` as
`decimal(10,2)`) or more decimals than its scale (`1.555`), NaN or infinity as an integer or a
decimal, and a finite number that overflows to infinity as a float (`1e400`) all fail. Text
with surrounding spaces is trimmed first; empty text is not a number (it fails).
"""

from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.datatypes import type_name


class CastFailure(NamedTuple):
    """A value that could not be cast: its row index, column, value and the reason."""

    row: int
    column: str
    value: object
    message: str


_INFINITY: Final = r"^\s*[+-]?inf(inity)?\s*$"


def reads_as_text(target: pa.DataType) -> bool:
    """Whether a reader should read a column of type `target` as text and cast it here.

    Arrow's CSV and JSON readers parse decimals without checking their precision
    (`123456789.1` is read into `decimal(10,2)`) and fail a whole block on one bad decimal;
    `cast_batch` rejects exactly the values that do not fit.
    """
    return pa.types.is_decimal(target)


def _failing_rows(array: pa.Array, target: pa.DataType, offset: int) -> list[int]:
    try:
        pc.cast(array, target)
        return []
    except (pa.ArrowInvalid, OverflowError):
        if len(array) == 1:
            return [offset]
        middle = len(array) // 2
        return _failing_rows(array[:middle], target, offset) + _failing_rows(
            array[middle:], target, offset + middle
        )


def _prepare(array: pa.Array, target: pa.DataType) -> pa.Array:
    # Text read from files often carries padding that no parser of numbers or dates expects.
    if pa.types.is_string(array.type) and not (
        pa.types.is_string(target) or pa.types.is_large_string(target)
    ):
        return pc.utf8_trim_whitespace(array)
    return array


def _overflowed(source: pa.Array, result: pa.Array, target: pa.DataType) -> list[int]:
    """Rows cast to an infinity that was not one (`1e400` as float64, 1e39 as float32)."""
    if not pa.types.is_floating(target) or not len(result):
        return []
    infinite = pc.fill_null(pc.is_inf(result), False)
    if not pc.any(infinite).as_py():
        return []
    if pa.types.is_string(source.type) or pa.types.is_large_string(source.type):
        meant = pc.match_substring_regex(source, _INFINITY, ignore_case=True)
    elif pa.types.is_floating(source.type):
        meant = pc.is_inf(source)
    else:
        meant = pa.nulls(len(source), pa.bool_())
    wrong = pc.and_(infinite, pc.invert(pc.fill_null(meant, False)))
    return pc.indices_nonzero(wrong).to_pylist()


def _nulled(array: pa.Array, rows: list[int]) -> pa.Array:
    mask = np.zeros(len(array), dtype=bool)
    mask[rows] = True
    return pc.if_else(pa.array(mask), pa.scalar(None, array.type), array)


def _no_cast(array: pa.Array, target: pa.DataType, column: str) -> ValueError:
    return ValueError(
        f"Column `{column}` of type `{type_name(array.type)}` cannot be cast to "
        f"`{type_name(target)}`"
    )


def _try_cast(array: pa.Array, target: pa.DataType, column: str) -> pa.Array | None:
    """The cast of `array`, or None when some value does not convert."""
    try:
        return pc.cast(array, target)
    except (pa.ArrowInvalid, OverflowError):
        return None
    except pa.ArrowNotImplementedError as exc:
        raise _no_cast(array, target, column) from exc


def cast_array(
    array: pa.Array, target: pa.DataType, column: str
) -> tuple[pa.Array, list[CastFailure]]:
    """Cast `array` to `target`; values that do not convert become null and are reported.

    Raises:
        ValueError: Arrow has no cast at all between the two types (a configuration error).
    """
    if array.type == target:
        return array, []
    prepared = array
    result = _try_cast(array, target, column)
    if result is None:  # padded text, or values that do not convert
        prepared = _prepare(array, target)
        result = _try_cast(prepared, target, column)
    bad: list[int] = []
    if result is None:  # some values do not convert: isolate them
        bad = _failing_rows(prepared, target, 0)
        result = pc.cast(_nulled(prepared, bad), target)
    overflowed = _overflowed(prepared, result, target)
    if overflowed:
        result = _nulled(result, overflowed)
    if not bad and not overflowed:
        return result, []
    out_of_range = set(overflowed)
    rows = sorted(set(bad) | out_of_range)
    values = array.take(pa.array(rows, pa.int64())).to_pylist()
    failures = [
        CastFailure(
            row,
            column,
            value,
            f"Value `{value}` in column `{column}` is "
            + ("out of range for " if row in out_of_range else "not a valid ")
            + type_name(target),
        )
        for row, value in zip(rows, values)
    ]
    return result, failures


def cast_batch(
    batch: pa.RecordBatch, types: dict[str, pa.DataType]
) -> tuple[pa.RecordBatch, list[CastFailure]]:
    """Cast the named columns of `batch`; return the cast batch and every failing value.

    A row with a failing value stays in the returned batch (with null there); callers that
    reject such rows remove them with `drop_rows`. Other columns are untouched.

    Raises:
        KeyError: a column named in `types` is not in the batch.
        ValueError: a cast between the two types does not exist.
    """
    arrays = list(batch.columns)
    failures: list[CastFailure] = []
    names = batch.schema.names
    for column, target in types.items():
        if column not in names:
            raise KeyError(column)
        index = names.index(column)
        arrays[index], found = cast_array(arrays[index], target, column)
        failures.extend(found)
    return pa.RecordBatch.from_arrays(arrays, names=names), failures


def drop_rows(batch: pa.RecordBatch, rows: set[int]) -> pa.RecordBatch:
    """Return `batch` without the rows at the given indices (order kept)."""
    if not rows:
        return batch
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[list(rows)] = False
    return batch.filter(pa.array(keep))
