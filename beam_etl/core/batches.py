"""The data model: Arrow record batches between steps, rows only where a row is the unit.

Sources attach two hidden columns to every batch so that any later step can say where a row
came from: `__beam_etl_file` (dictionary-encoded file or table name) and `__beam_etl_line`
(1-based line of the row's first physical line, or null when unknown). Sinks drop every column
whose name starts with `HIDDEN_PREFIX`, so sources refuse input columns named so (`with_origin`)
rather than lose them.
"""

import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final, TypeVar

import numpy as np
import pyarrow as pa

from beam_etl.core.errors import ConnectorError, DataError

HIDDEN_PREFIX: Final = "__beam_etl_"
FILE_COLUMN: Final = "__beam_etl_file"
LINE_COLUMN: Final = "__beam_etl_line"
_Data = TypeVar("_Data", pa.RecordBatch, pa.Table)


def check_names(names: Iterable[str], source: str) -> None:
    """Refuse column names that start with `HIDDEN_PREFIX`: every sink would drop them.

    Raises:
        ConnectorError: naming the first such column and `source`.
    """
    for name in names:
        if str(name).startswith(HIDDEN_PREFIX):
            raise ConnectorError(
                f"Column `{name}` of `{source}` starts with `{HIDDEN_PREFIX}`, which beam_etl "
                "reserves for its hidden columns (no output keeps them); rename it in the "
                "source (its header, field name or query alias)"
            )


def with_origin(batch: pa.RecordBatch, source: str, lines: Sequence[int] | None) -> pa.RecordBatch:
    """Return `batch` with the hidden origin columns set to `source` and `lines`.

    Every source calls this on every batch it reads.

    Raises:
        ConnectorError: a column of `batch` is named like a hidden column (`check_names`).
    """
    check_names(batch.schema.names, source)
    n = batch.num_rows
    files = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([source])
    )
    line_array = pa.array(lines, pa.int64()) if lines is not None else pa.nulls(n, pa.int64())
    arrays = [*batch.columns, files, line_array]
    names = [*batch.schema.names, FILE_COLUMN, LINE_COLUMN]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def describe_schema(schema: pa.Schema) -> str:
    """Return `schema` on one line for messages: `id: int64 not null, name: string`.

    `str(schema)` spans several lines (nested children, metadata), which cuts a one-line
    error message short.
    """
    return ", ".join(
        f"{field.name}: {field.type}{'' if field.nullable else ' not null'}" for field in schema
    )


def schema_changes(found: pa.Schema, expected: pa.Schema) -> str:
    """Return how `found` differs from `expected`, on one line (missing, extra, changed)."""
    changes = []
    missing = [name for name in expected.names if name not in found.names]
    extra = [name for name in found.names if name not in expected.names]
    if missing:
        changes.append("missing " + ", ".join(f"`{name}`" for name in missing))
    if extra:
        changes.append("extra " + ", ".join(f"`{name}`" for name in extra))
    for field in found:
        if field.name in expected.names and not field.equals(expected.field(field.name)):
            was = describe_schema(pa.schema([expected.field(field.name)]))
            changes.append(f"`{describe_schema(pa.schema([field]))}` instead of `{was}`")
    if not changes and found.names != expected.names:
        changes.append("columns in another order")
    return "; ".join(changes)


def visible(batch: pa.RecordBatch | pa.Table) -> Any:
    """Return `batch` without the hidden origin columns (zero-copy)."""
    names = batch.schema.names
    if not any(name.startswith(HIDDEN_PREFIX) for name in names):
        return batch
    keep = [i for i, name in enumerate(names) if not name.startswith(HIDDEN_PREFIX)]
    return batch.select(keep)


def visible_schema(schema: pa.Schema) -> pa.Schema:
    """Return `schema` without the hidden origin fields."""
    return pa.schema([f for f in schema if not f.name.startswith(HIDDEN_PREFIX)], schema.metadata)


def conform_columns(
    data: _Data,
    schema: pa.Schema,
    describe: Callable[[pa.Field, pa.DataType, Exception], str] | None = None,
) -> _Data:
    """Return `data` (a batch or a table) with exactly the columns of `schema`, in its order:
    a column `data` lacks is null, the others are cast to their type; any other column is left
    out (hidden origin columns too).

    Raises:
        DataError: a column does not cast, with the message `describe(field, found type,
            exception)` when `describe` is given.
        pyarrow.ArrowInvalid: a column does not cast and `describe` is None (likewise
            `ArrowNotImplementedError`).
    """
    arrays = []
    for field in schema:
        if field.name not in data.schema.names:
            arrays.append(pa.nulls(data.num_rows, field.type))
            continue
        column = data.column(field.name)
        try:
            arrays.append(column if column.type == field.type else column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if describe is None:
                raise
            raise DataError(describe(field, column.type, exc)) from exc
    return type(data).from_arrays(arrays, schema=schema)


def column_list(columns: Any, argument: str = "columns") -> list[str]:
    """Return `columns`, a step's argument naming columns, as a list.

    Raises:
        ValueError: `columns` is empty or holds something other than names.
    """
    if not columns or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"`{argument}` must list at least one column name")
    return list(columns)


def origins(batch: pa.RecordBatch) -> tuple[list[str | None], list[int | None]]:
    """Return the per-row source and line of `batch` (None where unknown)."""
    n = batch.num_rows
    names = batch.schema.names
    files: list[str | None] = (
        batch.column(FILE_COLUMN).to_pylist() if FILE_COLUMN in names else [None] * n
    )
    lines: list[int | None] = (
        batch.column(LINE_COLUMN).to_pylist() if LINE_COLUMN in names else [None] * n
    )
    return files, lines


def split_compact(table: pa.Table, max_rows: int) -> list[pa.RecordBatch]:
    """Return `table` as batches of at most `max_rows` rows that own their buffers.

    `Table.to_batches(max_chunksize)` gives slices that share one large buffer; pickled to the
    next stage, every slice would carry all of it.
    """
    batches = table.combine_chunks().to_batches(max_chunksize=max_rows)
    if len(batches) <= 1:
        return batches
    return [
        pa.RecordBatch.from_arrays(
            [pa.concat_arrays([column]) for column in batch.columns], schema=batch.schema
        )
        for batch in batches
    ]


def batch_to_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Return the rows of `batch` as dicts (hidden origin columns included)."""
    return batch.to_pylist()


def rows_to_batch(
    rows: Sequence[dict[str, Any]], schema: pa.Schema | None = None
) -> pa.RecordBatch:
    """Return one record batch holding `rows`, typed by `schema` when given.

    Rows missing a column get null; the schema is inferred from the rows when not given.
    """
    if schema is not None:
        return pa.RecordBatch.from_pylist(list(rows), schema=schema)
    return pa.RecordBatch.from_pylist(list(rows))


def key_of(row: dict[str, Any], columns: Sequence[str]) -> tuple:
    """Return a hashable, deterministic key of `row` over `columns`."""
    return tuple(_hashable(row.get(column)) for column in columns)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def json_safe(value: Any) -> Any:
    """Return `value` converted to something `json.dumps` accepts, keeping its meaning."""
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def payload_of(row: dict[str, Any]) -> dict[str, Any]:
    """Return the visible part of `row`, JSON-safe, for a dead-letter payload."""
    return {k: json_safe(v) for k, v in row.items() if not k.startswith(HIDDEN_PREFIX)}


# Built once: `json.dumps` with options builds a new encoder on every call.
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SAFE: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=json_safe, allow_nan=False
)


def payloads(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Return `payload_of` every row of `batch`, converted column by column (faster: values
    of JSON-native types are not walked)."""
    shown = [
        (i, name) for i, name in enumerate(batch.schema.names) if not name.startswith(HIDDEN_PREFIX)
    ]
    names = [name for _, name in shown]
    if not names:
        return [{} for _ in range(batch.num_rows)]
    columns = []
    for index, _ in shown:  # by position: a header may repeat a name
        column = batch.column(index)
        values = column.to_pylist()
        kind = column.type
        native = (
            pa.types.is_integer(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_null(kind)
        )
        if not native:
            values = [json_safe(value) for value in values]
        columns.append(values)
    return [dict(zip(names, row)) for row in zip(*columns)]


def concat_batches(batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """Return one table from batches whose schemas may differ by missing or null-typed columns."""
    tables = [pa.Table.from_batches([b]) for b in batches]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def dumps(value: Any) -> str:
    """Return compact JSON for a JSON-safe value."""
    return _COMPACT.encode(value)


def dumps_safe(value: Any) -> str:
    """Return compact JSON for any value, converting what JSON lacks (dates, decimals, bytes,
    NaN) as `json_safe` does; values JSON takes as they are are not walked twice."""
    try:
        return _SAFE.encode(value)
    except ValueError:  # a NaN or infinity somewhere: convert the whole value
        return dumps(json_safe(value))
