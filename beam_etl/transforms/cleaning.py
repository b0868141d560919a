"""Cleaning processors on Arrow batches: cast, select, rename, drop and reorder columns, drop
and fill nulls (text steps, trim, case and null markers, are in `text`).

Every step here keeps the order of rows and works on whole batches with `pyarrow.compute`.
Steps that only reshape or rewrite values reject nothing: a missing column fails the run (and
is caught when the spec is loaded wherever the input schema is known).
"""

import functools
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import HIDDEN_PREFIX, column_list, visible_schema
from beam_etl.core.casting import cast_batch, drop_rows
from beam_etl.core.datatypes import parse_type
from beam_etl.core.deadletter import CAST_FAILED, OUTPUT, DeadLetter, reject_all, rejects_from_mask
from beam_etl.core.errors import DataError
from beam_etl.transforms._base import BatchResult, BatchStep

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
    return reject_all(batch, step=step, reason=MISSING_COLUMN, message=message)


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
        self.columns = column_list(columns)
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


# --- value cleaning and column shaping (reject nothing) ---------------------------------------


def is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _kind(data_type: pa.DataType) -> str:
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return "number"
    if pa.types.is_decimal(data_type):
        return "number"
    if is_text(data_type):
        return "text"
    for kind in ("boolean", "date", "timestamp"):
        if getattr(pa.types, f"is_{kind}")(data_type):
            return kind
    return str(data_type)


def fill_plan(schema: pa.Schema, values: dict[str, Any], value: Any) -> dict[str, pa.Scalar]:
    """Return the fill value of each column, cast to the column's type.

    `values` name columns; `value` applies to every other visible column of the same kind
    (number, text, boolean, date, timestamp) as the value.

    Raises:
        ValueError: a named column is missing, or its value is not of its kind or range.
    """
    check_columns(schema, values)
    plan = {}
    chosen = dict(values)
    if value is not None:
        kind = _kind(pa.scalar(value).type)
        for field in visible_schema(schema):
            if field.name not in chosen and _kind(field.type) == kind:
                chosen[field.name] = value
    for name, fill in chosen.items():
        data_type = schema.field(name).type
        try:
            if _kind(pa.scalar(fill).type) != _kind(data_type):
                raise TypeError(_kind(pa.scalar(fill).type))
            plan[name] = pa.scalar(fill).cast(data_type)
        except (pa.ArrowException, TypeError, OverflowError):
            raise ValueError(
                f"Fill value `{fill}` does not fit column `{name}` of type {data_type}"
            ) from None
    return plan


def _fill(values: dict[str, Any], value: Any, batch: pa.RecordBatch, step: str) -> BatchResult:
    try:
        plan = fill_plan(batch.schema, values, value)
    except ValueError as exc:
        raise DataError(f"{exc} (step `{step}`)") from None
    for name, fill in plan.items():
        index = batch.schema.get_field_index(name)
        if batch.column(index).null_count:
            batch = batch.set_column(index, name, pc.fill_null(batch.column(index), fill))
    return batch, [], 0


class FillNulls(BatchStep):
    """Replace nulls by constants: one per column (`values`), or one `value` for all columns
    of its kind (number, text, boolean, date, timestamp). NaN is not null and is kept.

    Rejects nothing; a fill value that does not fit its column's type is an error when the
    spec is loaded (or fails the run where the schema was not known).
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(self, values: dict[str, Any] | None = None, *, value: Any = None) -> None:
        """Args:
        values: fill value by column name, e.g. `{country: unknown, amount: 0}`.
        value: fill value for every other column of the same kind, e.g. `0` for numbers.
        """
        super().__init__()
        if values is not None and not isinstance(values, dict):
            raise ValueError("`values` must map column names to fill values")
        if not values and value is None:
            raise ValueError("Give `values` (by column) or `value` (for all columns of its kind)")
        if values and any(v is None for v in values.values()):
            raise ValueError("`values` must not fill with null")
        self.values = dict(values or {})
        self.value = value

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Check columns and fill values against the schema, which is unchanged."""
        fill_plan(schema, self.values, self.value)
        return schema

    def batch_function(self):
        return functools.partial(_fill, self.values, self.value)


def _shape_names(columns: list[str], argument: str) -> list[str]:
    column_list(columns, argument)
    if len(set(columns)) != len(columns):
        raise ValueError(f"`{argument}` must list distinct column names")
    if any(c.startswith(HIDDEN_PREFIX) for c in columns):
        raise ValueError(f"`{argument}` cannot name origin columns (`{HIDDEN_PREFIX}*`)")
    return list(columns)


def _drop(columns: list[str], batch: pa.RecordBatch, step: str) -> BatchResult:
    _require(batch, columns, step)
    return batch.drop_columns(columns), [], 0


class DropColumns(BatchStep):
    """Remove `columns`; the others keep their order (origin columns are always kept)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(self, columns: list[str]) -> None:
        """Args:
        columns: the columns to remove.
        """
        super().__init__()
        self.columns = _shape_names(columns, "columns")

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.columns)
        return pa.schema([f for f in schema if f.name not in self.columns])

    def batch_function(self):
        return functools.partial(_drop, self.columns)


def reordered(names: list[str], first: list[str]) -> list[str]:
    """Return `names` with `first` moved to the front in that order, the rest in place."""
    return first + [n for n in names if n not in first]


def _reorder(columns: list[str], batch: pa.RecordBatch, step: str) -> BatchResult:
    _require(batch, columns, step)
    return batch.select(reordered(batch.schema.names, columns)), [], 0


class ReorderColumns(BatchStep):
    """Put `columns` first, in that order; the other columns follow in their current order.

    Unlike `SelectColumns`, no column is removed.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(self, columns: list[str]) -> None:
        """Args:
        columns: the columns to put first, in output order.
        """
        super().__init__()
        self.columns = _shape_names(columns, "columns")

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.columns)
        return pa.schema([schema.field(n) for n in reordered(schema.names, self.columns)])

    def batch_function(self):
        return functools.partial(_reorder, self.columns)
