"""Infer a schema from a sample of a file or a query: types, nullability, candidate keys.

CSV (the one untyped format) is read as text, then each column gets the first type, in this
order, that every sampled non-null value converts to: `bool` (true/false), `int64`,
`float64`, `date` (ISO `YYYY-MM-DD`), `timestamp[us]` (ISO, no offset), `timestamp[us, UTC]`
(ISO with offsets), else `string`. Numbers with a leading zero (`01234`) stay text. Values
are trimmed first; empty strings and the `null_values` are nulls. A column is nullable when
the sample holds a null. Candidate keys are the columns (else pairs of columns) that are
unique and non-null in the sample, floats excluded. All of this holds for the sample only:
pin the printed schema and review it. Integers are `int64`, never narrower, so that a later,
larger value does not break a pinned schema.

Typed sources (JSON, Parquet, Avro, Excel files; PostgreSQL and MySQL tables or queries) are
sampled through their own reader (`ReadFromX(...).sample(rows)`), so the types are the ones a
pipeline would see (a dictionary column as its values; a type the schema model cannot name,
such as a time of day, as string); nullability and candidate keys come from the sample as for
CSV. An empty table or query still gives its columns and types.
"""

import itertools
import os
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from beam_etl.core.catalogue import reader_for
from beam_etl.core.errors import ConnectorError
from beam_etl.io._compressed import is_compressed
from beam_etl.io._csvparse import exact_number_type
from beam_etl.keyed.buckets import decoded
from beam_etl.schema.model import Field, Schema, SchemaError

NULL_VALUES: Final = ("", "NULL", "null", "\\N")
_CANDIDATES: Final = (
    pa.bool_(),
    pa.int64(),
    pa.float64(),
    pa.date32(),
    pa.timestamp("us"),
    pa.timestamp("us", "UTC"),
)
_MAX_KEY_COLUMNS: Final = 20


def read_sample(
    path: str, sample_rows: int | None, delimiter: str = ",", encoding: str = "utf-8"
) -> pa.Table:
    """Return the first `sample_rows` rows of a CSV file (all of it when None), every column text.

    Raises:
        ConnectorError: the file cannot be read or parsed.
    """
    parse = pv.ParseOptions(delimiter=delimiter)
    try:
        with pv.open_csv(path, parse_options=parse) as header:
            names = header.schema.names
        convert = pv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        )
        read = pv.ReadOptions(encoding=encoding)
        batches, rows = [], 0
        with pv.open_csv(path, read, parse, convert) as reader:
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if sample_rows is not None and rows >= sample_rows:
                    break
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConnectorError(f"Cannot read a sample of `{path}`: {exc}") from None
    table = pa.Table.from_batches(batches, pa.schema([pa.field(n, pa.string()) for n in names]))
    return table.slice(0, sample_rows) if sample_rows is not None else table


def _normalize(column: pa.ChunkedArray, null_values: tuple[str, ...]) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(column.combine_chunks())
    is_null = pc.is_in(trimmed, value_set=pa.array(list(null_values), pa.string()))
    return pc.if_else(is_null, pa.scalar(None, pa.string()), trimmed)


def narrowest_type(values: pa.Array) -> pa.DataType:
    """Return the first candidate type every non-null value of a text array converts to."""
    present = values.drop_null()
    if not len(present):
        return pa.string()
    # Codes such as zip codes keep their leading zeros: numbers would drop them.
    padded = pc.any(pc.match_substring_regex(present, r"^[+-]?0\d")).as_py()
    for candidate in _CANDIDATES:
        if padded and candidate in (pa.int64(), pa.float64()):
            continue
        if candidate == pa.bool_():
            lowered = pc.utf8_lower(present)
            if pc.all(pc.is_in(lowered, value_set=pa.array(["true", "false"]))).as_py():
                return candidate
            continue
        try:
            pc.cast(present, candidate)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if candidate == pa.float64():  # integers beyond int64 would round: decimal or text
            return exact_number_type(pa.chunked_array([present])) or candidate
        return candidate
    return pa.string()


def candidate_keys(table: pa.Table, columns: list[str]) -> list[tuple[str, ...]]:
    """Return the columns (or, when none, pairs) unique and non-null across `table`."""
    usable = [
        c
        for c in columns[:_MAX_KEY_COLUMNS]
        if table.column(c).null_count == 0
        and not pa.types.is_floating(table.column(c).type)
        and not pa.types.is_nested(table.column(c).type)
    ]
    if not table.num_rows:
        return []
    single: list[tuple[str, ...]] = [
        (c,) for c in usable if pc.count_distinct(table.column(c)).as_py() == table.num_rows
    ]
    if single:
        return single
    return [
        pair
        for pair in itertools.combinations(usable, 2)
        if table.group_by(list(pair)).aggregate([]).num_rows == table.num_rows
    ]


def infer_schema(
    path: str,
    *,
    sample_rows: int | None = 10_000,
    delimiter: str = ",",
    encoding: str = "utf-8",
    null_values: tuple[str, ...] = NULL_VALUES,
) -> Schema:
    """Return the schema inferred from the first `sample_rows` rows of a CSV file (None: all).

    Raises:
        ConnectorError: the file cannot be read or parsed.
    """
    _check_sample_rows(sample_rows)
    sample = read_sample(path, sample_rows, delimiter, encoding)
    return schema_of_sample(sample, null_values=null_values)


def infer_source_schema(source: Any, *, sample_rows: int | None = 10_000) -> Schema:
    """Return the schema inferred from the first `sample_rows` rows (None: all) of a source.

    `source` is any beam_etl reader (`ReadFromJson`, `ReadFromParquet`, `ReadFromAvro`,
    `ReadFromExcel`, `ReadFromPostgres`, `ReadFromMySql`, `ReadFromCsv`): its types are kept,
    nullability and candidate keys come from the sample.

    Raises:
        ConnectorError: the source cannot be read, or the sample holds no column.
    """
    _check_sample_rows(sample_rows)
    sample = source.sample(sample_rows)
    if not sample.num_columns:
        raise ConnectorError("The sample holds no column to infer a schema from")
    return schema_of_sample(sample, narrow_text=False)


def schema_of_sample(
    sample: pa.Table, *, narrow_text: bool = True, null_values: tuple[str, ...] = NULL_VALUES
) -> Schema:
    """Return the schema of a sample: text columns narrowed (when asked), nullability, keys."""
    fields, typed = [], {}
    for name in sample.schema.names:
        column = sample.column(name)
        if narrow_text and pa.types.is_string(column.type):
            values = _normalize(column, null_values)
            data_type = narrowest_type(values)
            typed[name] = pc.cast(values, data_type)
        else:
            column = decoded(column)  # a category (dictionary) column is its values
            data_type, typed[name] = column.type, column
        unseen = not sample.num_rows  # no row: nothing says the column is never null
        try:
            fields.append(Field(name, data_type, nullable=unseen or typed[name].null_count > 0))
        except SchemaError:  # a type schemas cannot name (time of day, ...): its text
            typed[name] = pc.cast(typed[name], pa.string())
            fields.append(Field(name, pa.string(), nullable=unseen or typed[name].null_count > 0))
    keys = candidate_keys(pa.table(typed), list(typed)) if typed else []
    return Schema(tuple(fields), (), tuple(keys))


def _check_format(output_format: str) -> None:
    if output_format not in ("json", "yaml"):
        raise ValueError(f"`output_format` must be json or yaml, not `{output_format}`")


def _check_sample_rows(sample_rows: int | None) -> None:
    if sample_rows is not None and sample_rows < 1:
        raise ValueError(f"`sample_rows` must be at least 1 (or None for all), not `{sample_rows}`")


def infer_schema_text(
    path: str, *, sample_rows: int | None = 10_000, output_format: str = "json", **options
) -> str:
    """Return the inferred schema as JSON or YAML text (what `infer-schema PATH` prints).

    Raises:
        ValueError: `output_format` is not `json` or `yaml`.
        ConnectorError: the file cannot be read or parsed.
    """
    _check_format(output_format)  # before reading anything
    return schema_text(infer_schema(path, sample_rows=sample_rows, **options), output_format)


def schema_text(schema: Schema, output_format: str = "json") -> str:
    """Return `schema` as JSON or YAML text, as `infer-schema` prints it."""
    _check_format(output_format)
    if output_format == "json":
        return schema.to_json() + "\n"
    import yaml

    return yaml.safe_dump(schema.to_dict(), sort_keys=False, allow_unicode=True)


def reader_for_path(path: str) -> Any:
    """Return the reader of a JSON, Parquet, Avro or Excel file by its extension (the
    catalogue's `extensions`); None for CSV and other text (inferred from text by
    `infer_schema`).
    """
    name = os.path.splitext(path)[0] if is_compressed(path) else path
    entry = reader_for(name)
    if entry is None or entry.name == "ReadFromCsv":
        return None
    return entry.load()(path)
