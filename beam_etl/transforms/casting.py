"""Pure casting logic: cast Arrow columns, finding exactly the values that do not convert.

No Beam here. A failing cast is retried on halves of the array until the failing values are
isolated, so the cost is one vectorized cast when every value converts, and about
`2 * len * failures` cast work when a few do not (rejects are expected to be rare).
"""

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.datatypes import type_name


class CastFailure(NamedTuple):
    """A value that could not be cast: its row index, column, value and the reason."""

    row: int
    column: str
    value: object
    message: str


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


def cast_array(
    array: pa.Array, target: pa.DataType, column: str
) -> tuple[pa.Array, list[CastFailure]]:
    """Cast `array` to `target`; values that do not convert become null and are reported.

    Raises:
        ValueError: Arrow has no cast at all between the two types (a configuration error).
    """
    if array.type == target:
        return array, []
    try:
        return pc.cast(array, target), []
    except (pa.ArrowInvalid, OverflowError):
        pass  # padded text, or values that do not convert: try again below
    except pa.ArrowNotImplementedError as exc:
        raise ValueError(
            f"Column `{column}` of type `{type_name(array.type)}` cannot be cast to "
            f"`{type_name(target)}`"
        ) from exc
    prepared = _prepare(array, target)
    try:
        return pc.cast(prepared, target), []
    except pa.ArrowNotImplementedError as exc:
        raise ValueError(
            f"Column `{column}` of type `{type_name(array.type)}` cannot be cast to "
            f"`{type_name(target)}`"
        ) from exc
    except (pa.ArrowInvalid, OverflowError):
        pass  # some values do not convert: isolate them below
    bad = _failing_rows(prepared, target, 0)
    mask = np.zeros(len(prepared), dtype=bool)
    mask[bad] = True
    cleaned = pc.if_else(pa.array(mask), pa.scalar(None, prepared.type), prepared)
    values = array.take(pa.array(bad, pa.int64())).to_pylist()
    failures = [
        CastFailure(
            row,
            column,
            value,
            f"Value `{value}` in column `{column}` is not a valid {type_name(target)}",
        )
        for row, value in zip(bad, values)
    ]
    return pc.cast(cleaned, target), failures


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
