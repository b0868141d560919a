"""Avro source and sink on fastavro, with the Avro <-> Arrow type mapping between them.

| Avro | Arrow |
|---|---|
| `["null", T]` (either order) | `T`, nullable |
| `boolean`, `int`, `long`, `float`, `double` | `bool`, `int32`, `int64`, `float32`, `float64` |
| `string`, `enum`, `string` + `uuid` (top-level fields only) | `string` |
| `bytes`, `fixed` | `binary`, `fixed_size_binary(size)` |
| `bytes`/`fixed` + `decimal(P, S)` | `decimal128(P, S)` (`decimal256` above 38 digits) |
| `int` + `date` | `date32` |
| `long` + `timestamp-millis` / `timestamp-micros` | `timestamp[ms, UTC]` / `timestamp[us, UTC]` |
| `long` + `local-timestamp-millis` / `-micros` | `timestamp[ms]` / `timestamp[us]` (no zone) |
| `int` + `time-millis`, `long` + `time-micros` | `time32[ms]`, `time64[us]` |
| `record`, `array`, `map` | `struct`, `list`, `map<string, T>` |

Other unions and recursive types have no Arrow equivalent and are refused with an error naming
the field. Writing uses the inverse mapping (nullable fields become `["null", T]` with a null
default; zoned timestamps are written as UTC instants; nanoseconds must fit microseconds).
"""

import itertools
import re
from collections.abc import Iterator
from typing import Any, Final

import apache_beam as beam
import fastavro
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.batches import check_names, describe_schema, schema_changes, with_origin
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.io._documents import Render, WriteDocument
from beam_etl.io._files import match_files, new_files
from beam_etl.io._local import LocalSample

CODECS: Final = ("null", "deflate", "bzip2", "xz")
_PRIMITIVES: Final[dict[str, pa.DataType]] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
# The logical types fastavro decodes, keyed like fastavro's own table (`<type>-<logicalType>`).
_LOGICAL: Final[dict[str, pa.DataType]] = {
    "int-date": pa.date32(),
    "long-timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "long-timestamp-micros": pa.timestamp("us", tz="UTC"),
    "long-local-timestamp-millis": pa.timestamp("ms"),
    "long-local-timestamp-micros": pa.timestamp("us"),
    "int-time-millis": pa.time32("ms"),
    "long-time-micros": pa.time64("us"),
    "string-uuid": pa.string(),
}
_AVRO_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _AvroToArrow:
    """Maps one writer schema to Arrow, resolving named types in the order Avro defines them."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.open: set[str] = set()
        self.uuid_columns: list[str] = []  # fastavro yields `UUID` objects, which Arrow refuses

    def field(self, schema: Any, where: str) -> pa.Field:
        if isinstance(schema, list):
            branches = [branch for branch in schema if branch != "null"]
            if len(branches) > 1:
                raise ValueError(
                    f"field `{where}` is a union of {len(branches)} non-null types; only "
                    "unions of null and one type have an Arrow equivalent"
                )
            data_type = self.type(branches[0], where) if branches else pa.null()
            return pa.field(
                where.rpartition(".")[2], data_type, nullable=len(branches) < len(schema)
            )
        return pa.field(where.rpartition(".")[2], self.type(schema, where), nullable=False)

    def type(self, schema: Any, where: str) -> pa.DataType:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            if schema in self.open:
                raise ValueError(f"field `{where}` has the recursive type `{schema}`")
            if schema not in self.named:
                raise ValueError(f"field `{where}` refers to the unknown type `{schema}`")
            return self.type(self.named[schema], where)
        if isinstance(schema, list):
            return self.field(schema, where).type
        kind, logical = schema["type"], schema.get("logicalType")
        if kind in ("record", "enum", "fixed"):
            for name in _names_of(schema):  # later fields may refer to it by name
                self.named[name] = schema
        if logical == "decimal" and kind in ("bytes", "fixed"):
            precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
            if precision <= 38:
                return pa.decimal128(precision, scale)
            return pa.decimal256(precision, scale)
        if f"{kind}-{logical}" == "string-uuid":
            if "." in where:
                raise ValueError(f"field `{where}` is a nested uuid; only top-level ones are read")
            self.uuid_columns.append(where)
        if f"{kind}-{logical}" in _LOGICAL:
            return _LOGICAL[f"{kind}-{logical}"]
        if kind in ("record", "enum", "fixed"):
            return self._named(schema, where)
        if kind == "array":
            return pa.list_(self.field(schema["items"], _child(where, "item")))
        if kind == "map":
            values = self.field(schema["values"], _child(where, "value"))
            return pa.map_(pa.string(), values)
        return self.type(kind, where)  # a primitive written as {"type": ...}; unknown logical

    def _named(self, schema: dict, where: str) -> pa.DataType:
        if schema["type"] == "enum":
            return pa.string()
        if schema["type"] == "fixed":
            return pa.binary(int(schema["size"]))
        names = _names_of(schema)
        self.open.update(names)
        fields = [self.field(f["type"], _child(where, f["name"])) for f in schema["fields"]]
        self.open.difference_update(names)
        return pa.struct(fields)


def _child(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _names_of(schema: dict) -> list[str]:
    """Every name a named type can be referred to by: full name and short name."""
    name = schema["name"]
    namespace = schema.get("namespace")
    full = f"{namespace}.{name}" if namespace and "." not in name else name
    return list({full, full.rpartition(".")[2]})


def arrow_schema_of(avro_schema: dict) -> pa.Schema:
    """Return the Arrow schema of records written with the Avro record schema `avro_schema`.

    Raises:
        ValueError: a field has no Arrow equivalent (the message names it).
    """
    return _mapping(avro_schema)[0]


def _mapping(avro_schema: dict) -> tuple[pa.Schema, list[str]]:
    """Return the Arrow schema and the names of the top-level uuid columns."""
    if not isinstance(avro_schema, dict) or avro_schema.get("type") != "record":
        raise ValueError("the top-level schema is not a record")
    mapper = _AvroToArrow()
    schema = pa.schema(mapper.type(avro_schema, "").fields)
    return schema, mapper.uuid_columns


def _open_reader(path: str, stream: Any) -> tuple[Any, Any]:
    try:
        reader = fastavro.reader(stream)
        schema = reader.writer_schema
    except Exception as exc:  # fastavro raises ValueError, EOFError, ... on damaged headers
        raise ConnectorError(f"Cannot read `{path}` as Avro: {_one_line(exc)}") from exc
    return reader, schema


def _reopen(path: str) -> Any:
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_avro_schema(path: str) -> pa.Schema:
    """Return the Arrow schema of the Avro file at `path` (reads only its header).

    Raises:
        ConnectorError: the file is not Avro, or its schema has no Arrow equivalent.
    """
    with _reopen(path) as stream:
        _, schema = _open_reader(path, stream)
    return _mapping_in(path, schema)[0]


def _mapping_in(path: str, avro_schema: dict) -> tuple[pa.Schema, list[str]]:
    try:
        return _mapping(avro_schema)
    except ValueError as exc:
        raise ConnectorError(f"Cannot read `{path}`: {_one_line(exc)}") from exc


def _one_line(exc: Exception) -> str:
    """The exception's text on one line (a library's message may span several)."""
    return " ".join(str(exc).split())


def _uuids_as_text(rows: list[dict], columns: list[str]) -> None:
    for name in columns:
        for row in rows:
            if row[name] is not None:
                row[name] = str(row[name])


class _ReadAvroFileFn(beam.DoFn):
    def __init__(self, step: str, schema: pa.Schema, batch_rows: int) -> None:
        self._step = step
        self._schema = schema
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)

    def process(self, path: str) -> Iterator[pa.RecordBatch]:
        with _reopen(path) as stream:
            reader, avro_schema = _open_reader(path, stream)
            found, uuids = _mapping_in(path, avro_schema)
            if found != self._schema:
                raise ConnectorError(
                    f"The schema of `{path}` ({describe_schema(found)}) differs from the first "
                    f"file's ({describe_schema(self._schema)}): "
                    f"{schema_changes(found, self._schema)}; read files of different schemas "
                    "with separate sources"
                )
            records, first = iter(reader), 1
            while rows := self._next_rows(records, path, first):
                _uuids_as_text(rows, uuids)
                batch = pa.RecordBatch.from_pylist(rows, schema=self._schema)
                yield with_origin(batch, path, range(first, first + len(rows)))
                self._rows_read.inc(len(rows))
                first += len(rows)

    def _next_rows(self, records: Iterator[dict], path: str, first: int) -> list[dict]:
        try:
            return list(itertools.islice(records, self._batch_rows))
        except Exception as exc:  # truncated blocks, bad sync markers, codec errors
            raise ConnectorError(
                f"Cannot read `{path}`: the Avro data is damaged after record {first - 1} "
                f"or soon after ({type(exc).__name__}: {_one_line(exc)})"
            ) from exc


class ReadFromAvro(LocalSample, beam.PTransform):
    """Read Avro files into Arrow record batches, typed by the files' writer schema.

    Bounded. Each file is read by one worker (files are spread over workers), block by block,
    into batches of up to `batch_rows` records, in file order. The hidden origin columns hold
    the file path and, as the `line`, the 1-based index of the record in its file. Avro data is
    typed, so no row is rejected: a damaged file, or one whose schema differs from the first
    file's, fails the run with a `ConnectorError` naming the file. Types map as listed in this
    module's documentation.
    Output: a PCollection of batches.
    """

    def __init__(
        self,
        path: str | list[str],
        *,
        batch_rows: int = 50_000,
        incremental: bool | str = False,
    ) -> None:
        """Args:
        path: a file, a glob pattern (`data/*.avro`) or a list of them.
        batch_rows: records per output batch (bounds memory per worker).
        incremental: load only files no earlier successful run loaded (true: by path,
            size and modification time; `hash`: by content); see README.
        """
        super().__init__()
        self.incremental = incremental
        if not isinstance(batch_rows, int) or batch_rows <= 0:
            raise ValueError(f"`batch_rows` must be a positive integer, not `{batch_rows}`")
        self.path = path
        self.batch_rows = batch_rows
        self._files = [file for file, _ in match_files(path)]
        self._schema = read_avro_schema(self._files[0])
        check_names(self._schema.names, self._files[0])

    @property
    def schema(self) -> pa.Schema:
        """The schema of the output batches (without the hidden origin columns)."""
        return self._schema

    def _local_stages(self) -> list[beam.DoFn]:
        return [_ReadAvroFileFn(self.label, self._schema, self.batch_rows)]

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(new_files(self.label, self._files, self.incremental))
            | "Distribute" >> beam.Reshuffle()
            | "Read"
            >> beam.ParDo(
                _ReadAvroFileFn(self.label, self._schema, self.batch_rows)
            ).with_output_types(pa.RecordBatch)
        )


class _AvroSchemaBuilder:
    """Builds the Avro schema of an Arrow schema; nested records get unique names."""

    def __init__(self) -> None:
        self.record_names: set[str] = set()

    def record(self, name: str, fields: list[pa.Field], where: str) -> dict:
        bad = [f.name for f in fields if not _AVRO_NAME.fullmatch(f.name)]
        if bad:
            raise ConnectorError(
                f"Column names {', '.join(f'`{where}{n}`' for n in bad)} are not valid Avro "
                "names (letters, digits and `_`, not starting with a digit); rename them first"
            )
        unique = name
        while unique in self.record_names:
            unique += "_"
        self.record_names.add(unique)
        return {
            "type": "record",
            "name": unique,
            "fields": [self.field(f, where) for f in fields],
        }

    def field(self, field: pa.Field, where: str) -> dict:
        avro = self.type(field.type, f"{where}{field.name}")
        if field.nullable and avro != "null":
            return {"name": field.name, "type": ["null", avro], "default": None}
        return {"name": field.name, "type": avro}

    def nullable(self, field: pa.Field, where: str) -> Any:
        avro = self.type(field.type, where)
        return ["null", avro] if field.nullable and avro != "null" else avro

    def type(self, t: pa.DataType, where: str) -> Any:
        simple = _simple_avro_type(t)
        if simple is not None:
            return simple
        if pa.types.is_dictionary(t):
            return self.type(t.value_type, where)
        if pa.types.is_fixed_size_binary(t):
            return {"type": "fixed", "name": self._fixed_name(where), "size": t.byte_width}
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return {"type": "array", "items": self.nullable(t.value_field, f"{where}.item")}
        if pa.types.is_map(t) and pa.types.is_string(t.key_type):
            return {"type": "map", "values": self.nullable(t.item_field, f"{where}.value")}
        if pa.types.is_struct(t):
            fields = [t.field(i) for i in range(t.num_fields)]
            return self.record(where.replace(".", "_"), fields, f"{where}.")
        raise ConnectorError(
            f"Column `{where}` has type `{t}`, which has no Avro equivalent; cast it first"
        )

    def _fixed_name(self, where: str) -> str:
        name = f"{where.replace('.', '_')}_fixed"
        self.record_names.add(name)
        return name


def _simple_avro_type(t: pa.DataType) -> Any:
    if pa.types.is_null(t) or pa.types.is_boolean(t):
        return "null" if pa.types.is_null(t) else "boolean"
    if pa.types.is_integer(t):
        small = t.bit_width < 32 or (t.bit_width == 32 and pa.types.is_signed_integer(t))
        return "int" if small else "long"
    if pa.types.is_float32(t) or pa.types.is_float64(t):
        return "float" if pa.types.is_float32(t) else "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_decimal(t):
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": t.precision,
            "scale": t.scale,
        }
    if pa.types.is_date(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_timestamp(t):
        unit = "millis" if t.unit in ("s", "ms") else "micros"
        local = "" if t.tz else "local-"
        return {"type": "long", "logicalType": f"{local}timestamp-{unit}"}
    if pa.types.is_time32(t):
        return {"type": "int", "logicalType": "time-millis"}
    if pa.types.is_time64(t):
        return {"type": "long", "logicalType": "time-micros"}
    return None


def avro_schema_of(schema: pa.Schema, name: str = "Row") -> dict:
    """Return the Avro record schema named `name` for records of the Arrow `schema`.

    Raises:
        ConnectorError: a column name is not a valid Avro name, or a type has no equivalent.
    """
    return _AvroSchemaBuilder().record(name, list(schema), "")


def _avro_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast nanosecond timestamps to microseconds (Avro's finest); fails if that loses data."""
    fields = [
        f.with_type(pa.timestamp("us", f.type.tz))
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
        else f
        for f in batch.schema
    ]
    target = pa.schema(fields)
    return batch if target.equals(batch.schema) else batch.cast(target)


def _records(batches: Iterator[pa.RecordBatch]) -> Iterator[dict]:
    for batch in batches:
        yield from _avro_ready(batch).to_pylist(maps_as_pydicts="strict")


class _RenderAvro:
    def __init__(self, codec: str) -> None:
        self.codec = codec

    def __call__(self, path: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
        parsed = fastavro.parse_schema(avro_schema_of(schema))
        with open(path, "wb") as out:
            fastavro.writer(out, parsed, _records(batches), codec=self.codec)


class WriteToAvro(WriteDocument):
    """Write record batches to one Avro file, published atomically when every bundle is done.

    Bundles are staged as Arrow IPC files; the publish step streams them into one Avro file
    (bounded memory) under a temporary name and renames it into place, so a failed run leaves
    `path` as it was, and a re-run replaces it. The Avro schema is derived from the batches'
    Arrow schema (see this module's documentation); batches of different schemas are unified
    (missing columns become null). Hidden origin columns are dropped.
    Output: one element, the number of rows written.
    """

    def __init__(self, path: str, *, codec: str = "deflate") -> None:
        """Args:
        path: the Avro file to write (parent folders are created).
        codec: block compression: `deflate` (default), `null` (none), `bzip2` or `xz`.
        """
        super().__init__()
        if codec not in CODECS:
            raise ValueError(f"Unknown codec `{codec}`; use one of {', '.join(CODECS)}")
        self.path = path
        self.codec = codec
        self.max_rows = None

    def renderer(self) -> Render:
        return _RenderAvro(self.codec)
