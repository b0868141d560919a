"""Cleaning processors on Arrow batches: cast, select, rename, reject or drop nulls."""

import functools
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batches import HIDDEN_PREFIX
from beam_etl.datatypes import parse_type
from beam_etl.deadletter import CAST_FAILED, OUTPUT, DeadLetter, rejects_from_mask
from beam_etl.errors import DataError
from beam_etl.transforms._base import BatchResult, BatchStep
from beam_etl.transforms.casting import cast_batch, drop_rows

NULL_VALUE = "null_value"
MISSING_COLUMN = "missing_column"


def check_columns(schema: pa.Schema, columns) -> None:
    """Raise ValueError naming the columns of `columns` that `schema` lacks."""
    absent = [c for c in columns if c not in schema.names]
    if absent:
        visible = [n for n in schema.names if not n.startswith(HIDDEN_PREFIX)]
        raise ValueError(
            f"Column(s) {', '.join(f'`{c}`' for c in absent)} not in the input "
            f"(columns: {', '.join(visible)})"
        )


def _missing(batch: pa.RecordBatch, columns, step: str) -> list[DeadLetter] | None:
    absent = [c for c in columns if c not in batch.schema.names]
    if not absent:
        return None
    message = f"Column(s) {', '.join(f'`{c}`' for c in absent)} not in the input"
    mask = pa.array([True] * batch.num_rows)
    return rejects_from_mask(
        batch, mask, step=step, reason=MISSING_COLUMN, messages=[message] * batch.num_rows
    )


def _cast(types: dict[str, pa.DataType], batch: pa.RecordBatch, step: str) -> BatchResult:
    if (letters := _missing(batch, types, step)) is not None:
        return None, letters, 0
    typed, failures = cast_batch(batch, types)
    if not failures:
        return typed, [], 0
    messages: dict[int, list[str]] = {}
    for failure in failures:
        messages.setdefault(failure.row, []).append(failure.message)
    rows = sorted(messages)
    flags = np.zeros(batch.num_rows, dtype=bool)
    flags[rows] = True
    mask = pa.array(flags)
    letters = rejects_from_mask(
        batch, mask, step=step, reason=CAST_FAILED, messages=["; ".join(messages[r]) for r in rows]
    )
    return drop_rows(typed, set(rows)), letters, 0


class CastColumns(BatchStep):
    """Cast columns to types; a row with a value that does not convert becomes a dead letter.

    Order kept. Strings are trimmed before conversion to numbers, dates and booleans. A row
    whose value fails leaves through `error` (`cast_failed`, naming column and value); an
    input lacking a named column sends its rows there too (`missing_column`).
    """

    def __init__(self, columns: dict[str, str]) -> None:
        """Args:
        columns: target type by column name, e.g. `{amount: float64, day: date}`.
        """
        super().__init__()
        if not isinstance(columns, dict) or not columns:
            raise ValueError("`columns` must map at least one column name to a type")
        self.types = {name: parse_type(t) for name, t in columns.items()}

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Return `schema` with the cast columns' new types."""
        check_columns(schema, self.types)
        for name, data_type in self.types.items():
            schema = schema.set(schema.get_field_index(name), pa.field(name, data_type))
        return schema

    def batch_function(self):
        return functools.partial(_cast, self.types)


def _reject_nulls(columns: list[str], reject: bool, batch: pa.RecordBatch, step: str):
    if (letters := _missing(batch, columns, step)) is not None:
        return None, letters, 0
    nulls = {
        c: pc.is_null(batch.column(c), nan_is_null=True).to_numpy(zero_copy_only=False)
        for c in columns
    }
    flags = np.logical_or.reduce(list(nulls.values()))
    if not flags.any():
        return batch, [], 0
    kept = batch.filter(pa.array(~flags))
    if not reject:
        return kept, [], batch.num_rows - kept.num_rows
    messages = [
        "Null in " + ", ".join(f"`{c}`" for c in columns if nulls[c][row])
        for row in np.flatnonzero(flags)
    ]
    letters = rejects_from_mask(
        batch, pa.array(flags), step=step, reason=NULL_VALUE, messages=messages
    )
    return kept, letters, 0


class DropNulls(BatchStep):
    """Remove rows with a null (or NaN) in any of `columns`.

    With `reject: true` (the default) each removed row leaves through `error` (`null_value`);
    with `reject: false` it is dropped on purpose and counted as dropped. Order kept.
    """

    def __init__(self, columns: list[str], *, reject: bool = True) -> None:
        """Args:
        columns: the columns that must hold a value.
        reject: send removed rows to the dead-letter output (true) or only count them.
        """
        super().__init__()
        if not columns or not all(isinstance(c, str) for c in columns):
            raise ValueError("`columns` must list at least one column name")
        self.columns = list(columns)
        self.reject = reject

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.columns)
        return schema

    def batch_function(self):
        return functools.partial(_reject_nulls, self.columns, self.reject)


def _require(batch: pa.RecordBatch, columns, step: str) -> None:
    try:
        check_columns(batch.schema, columns)
    except ValueError as exc:
        raise DataError(f"{exc} (step `{step}`)") from None


def _select(columns: list[str], batch: pa.RecordBatch, step: str) -> BatchResult:
    _require(batch, columns, step)
    hidden = [n for n in batch.schema.names if n.startswith(HIDDEN_PREFIX)]
    return batch.select(columns + hidden), [], 0


class SelectColumns(BatchStep):
    """Keep only `columns`, in that order (origin columns are kept too). Order of rows kept.

    Rejects nothing: a missing column fails the run (and is caught when the spec is loaded
    wherever the input schema is known).
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(self, columns: list[str]) -> None:
        """Args:
        columns: the columns to keep, in output order.
        """
        super().__init__()
        if not columns or len(set(columns)) != len(columns):
            raise ValueError("`columns` must list distinct column names")
        self.columns = list(columns)

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.columns)
        return pa.schema([schema.field(c) for c in self.columns])

    def batch_function(self):
        return functools.partial(_select, self.columns)


def _rename(mapping: dict[str, str], batch: pa.RecordBatch, step: str) -> BatchResult:
    _require(batch, mapping, step)
    return batch.rename_columns([mapping.get(n, n) for n in batch.schema.names]), [], 0


class RenameColumns(BatchStep):
    """Rename columns (`{old: new}`); other columns and the order are untouched.

    Rejects nothing: a missing column fails the run (and is caught when the spec is loaded
    wherever the input schema is known).
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(self, columns: dict[str, str]) -> None:
        """Args:
        columns: new name by old name.
        """
        super().__init__()
        if not isinstance(columns, dict) or not columns:
            raise ValueError("`columns` must map old names to new names")
        if len(set(columns.values())) != len(columns):
            raise ValueError("`columns` gives the same new name twice")
        self.mapping = dict(columns)

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.mapping)
        return pa.schema([f.with_name(self.mapping.get(f.name, f.name)) for f in schema])

    def batch_function(self):
        return functools.partial(_rename, self.mapping)
