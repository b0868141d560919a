"""Avro source and sink on fastavro.

Types map as `beam_etl.core.avrotypes` lists, in its portable flavour: every Avro reader can
read what `WriteToAvro` writes (zoned timestamps are written as UTC instants; nanoseconds must
fit microseconds), and `ReadFromAvro` reads `uuid` strings as text at the top level only.
"""

import itertools
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import fastavro
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.avrotypes import AvroToArrow, avro_schema, invalid_names
from beam_etl.core.batches import check_names, describe_schema, schema_changes, with_origin
from beam_etl.core.batching import PYTHON_ROWS, BatchSizer, check_batch_rows
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.io._documents import Render, WriteDocument
from beam_etl.io._files import match_files
from beam_etl.io._local import FileSource

CODECS: Final = ("null", "deflate", "bzip2", "xz")


def arrow_schema_of(avro_schema: dict) -> pa.Schema:
    """Return the Arrow schema of records written with the Avro record schema `avro_schema`.

    Raises:
        ValueError: a field has no Arrow equivalent (the message names it).
    """
    return _mapping(avro_schema)[0]


def _mapping(avro_schema: dict) -> tuple[pa.Schema, list[str]]:
    """Return the Arrow schema and the names of the top-level uuid columns."""
    mapper = AvroToArrow()
    schema = mapper.schema(avro_schema)
    nested = [path for path in mapper.uuid_paths if "." in path]
    if nested:  # fastavro yields `UUID` objects, which Arrow refuses: only columns are turned
        raise ValueError(f"field `{nested[0]}` is a nested uuid; only top-level ones are read")
    return schema, mapper.uuid_paths


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
    def __init__(self, step: str, schema: pa.Schema, batch_rows: int | None) -> None:
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
            sizer = BatchSizer(
                self._step, rows=self._batch_rows, schema=self._schema, max_rows=PYTHON_ROWS
            )
            while rows := self._next_rows(records, path, first, sizer.rows()):
                _uuids_as_text(rows, uuids)
                batch = pa.RecordBatch.from_pylist(rows, schema=self._schema)
                sizer.observe(batch)
                yield with_origin(batch, path, range(first, first + len(rows)))
                self._rows_read.inc(len(rows))
                first += len(rows)

    def _next_rows(self, records: Iterator[dict], path: str, first: int, size: int) -> list[dict]:
        try:
            return list(itertools.islice(records, size))
        except Exception as exc:  # truncated blocks, bad sync markers, codec errors
            raise ConnectorError(
                f"Cannot read `{path}`: the Avro data is damaged after record {first - 1} "
                f"or soon after ({type(exc).__name__}: {_one_line(exc)})"
            ) from exc


class ReadFromAvro(FileSource, beam.PTransform):
    """Read Avro files into Arrow record batches, typed by the files' writer schema.

    Bounded. Each file is read by one worker (files are spread over workers), block by block,
    into batches (about 8 MiB each, or `batch_rows` records), in file order. The hidden origin
    columns hold the file path and, as the `line`, the 1-based index of the record in its file.
    Avro data is typed, so no row is rejected: a damaged file, or one whose schema differs
    from the first file's, fails the run with a `ConnectorError` naming the file. Types map as
    listed in `beam_etl.core.avrotypes`.
    Output: a PCollection of batches.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = ("output",)

    def __init__(
        self,
        path: str | list[str],
        *,
        batch_rows: int | None = None,
        incremental: bool | str = False,
    ) -> None:
        """Args:
        path: a file, a glob pattern (`data/*.avro`) or a list of them.
        batch_rows: records per output batch; none (the default): batches of about 8 MiB,
            sized by the records' measured width (`beam_etl.core.batching`).
        incremental: load only files no earlier successful run loaded (true: by path,
            size and modification time; `hash`: by content); see README.
        """
        super().__init__()
        self.incremental = incremental
        check_batch_rows(batch_rows)
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
        read = _ReadAvroFileFn(self.label, self._schema, self.batch_rows)
        return self._read_files(pbegin, [], ("Read", read))


def avro_schema_of(schema: pa.Schema, name: str = "Row") -> dict:
    """Return the Avro record schema named `name` for records of the Arrow `schema`.

    Raises:
        ConnectorError: a column name is not a valid Avro name, or a type has no equivalent.
    """
    bad = invalid_names(schema)
    if bad:
        raise ConnectorError(
            f"Column names {', '.join(f'`{n}`' for n in bad)} are not valid Avro names "
            "(letters, digits and `_`, not starting with a digit); rename them first"
        )
    try:
        return avro_schema(schema, name)
    except ValueError as exc:
        raise ConnectorError(str(exc)) from exc


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
    Arrow schema (see `beam_etl.core.avrotypes`); batches of different schemas are unified
    (missing columns become null). Hidden origin columns are dropped.
    Output: one element, the number of rows written.
    """

    def __init__(
        self, path: str, *, compression: str | None = None, codec: str | None = None
    ) -> None:
        """Args:
        path: the Avro file to write (parent folders are created).
        compression: block compression: `deflate` (default), `null` (none), `bzip2` or `xz`
            (the key every file sink spells `compression`).
        codec: the former name of `compression`, still accepted.
        """
        super().__init__()
        if compression is not None and codec is not None and compression != codec:
            raise ValueError("give `compression` or its former name `codec`, not both")
        key = "compression" if compression is not None else "codec"
        codec = compression or codec or "deflate"
        if codec not in CODECS:
            raise ValueError(f"Unknown {key} `{codec}`; use one of {', '.join(CODECS)}")
        self.path = path
        self.codec = codec
        self.max_rows = None

    def renderer(self) -> Render:
        return _RenderAvro(self.codec)
