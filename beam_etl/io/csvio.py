"""CSV source on pyarrow, splittable by byte ranges, with dead letters for bad rows.

Reading is planned at construction (files matched, column names and types fixed) so that
every worker parses with the same schema, then runs as: file list -> byte ranges at record
boundaries -> shuffle (so several workers read one large file) -> parse ranges into batches.
"""

import codecs
import contextlib
import functools
import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.batches import conform_columns, dumps, json_safe, visible, with_origin
from beam_etl.core.batching import log_text_blocks
from beam_etl.core.contract import ungated
from beam_etl.core.datatypes import parse_type
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.local import is_local_runner
from beam_etl.core.metrics import BYTES_READ, ROWS_READ, step_counter
from beam_etl.core.threads import ordered_map, put_while
from beam_etl.io import _csvparse
from beam_etl.io._compressed import (
    ChunkStream,
    is_compressed,
    open_compressed_writer,
    open_raw,
    resolve_compression,
)
from beam_etl.io._csvscan import Syntax, split_points
from beam_etl.io._files import (
    BundleWriter,
    Part,
    StageAndPublish,
    check_file_target,
    copy_parts,
    discard_folder,
    match_files,
    replacing,
    staging_dir,
)
from beam_etl.io._ipcparts import IpcPartWriter, parts_schema, read_parts
from beam_etl.io._local import FileSource

_LOG = logging.getLogger(__name__)
DEFAULT_NULL_VALUES: Final = ("", "NULL", "null", "\\N")
_MB: Final = 1 << 20


class _PlanRangesFn(beam.DoFn):
    """Cut each file into `(path, start, length, first_line, is_first)` ranges."""

    def __init__(self, split_bytes: int, syntax: Syntax) -> None:
        self._split_bytes = split_bytes
        self._syntax = syntax

    def process(self, file: tuple[str, int]) -> Iterator[tuple[str, int, int | None, int, bool]]:
        path, size = file
        points, bounds = [(0, 1)], [size]
        if not is_compressed(path) and size > self._split_bytes:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                points = split_points(stream, size, self._split_bytes, self._syntax)
            bounds = [offset for offset, _ in points[1:]] + [size]
        for (offset, line), end in zip(points, bounds):
            length = None if len(points) == 1 else end - offset  # one range: to the end
            yield (path, offset, length, line, offset == 0)


class _ReadRangeFn(beam.DoFn):
    def __init__(self, step: str, options: "_csvparse.ParseSettings") -> None:
        self._step = step
        self._options = options

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)
        self._bytes_read = step_counter(self._step, BYTES_READ)
        self._logged = False

    def process(self, file_range: tuple[str, int, int | None, int, bool]):
        path, start, length, first_line, is_first = file_range
        reader = _csvparse.RangeReader(self._options, self._step, path, first_line, is_first)
        if is_compressed(path):  # read whole; a truncated stream is an error, not less data
            yield from self._emit(reader, ChunkStream(path), None, path)
        else:
            with open_raw(path) as stream:
                if start:
                    stream.seek(start)
                yield from self._emit(reader, stream, length, path)

    def _emit(self, reader, stream, length: int | None, path: str):
        # Bytes read so far give the progress display its percent (plain files only).
        position = None if is_compressed(path) else stream.tell()
        for result in reader.read(stream, length):
            if isinstance(result, DeadLetter):
                yield beam.pvalue.TaggedOutput(ERROR, result)
            else:
                batch, lines = result
                if not self._logged and batch.num_rows > 1:
                    self._logged = True
                    log_text_blocks(self._step, self._options.block_size, batch)
                yield with_origin(batch, path, lines)
                if position is not None:
                    self._bytes_read.inc(stream.tell() - position)
                    position = stream.tell()
        self._rows_read.inc(reader.records)


class ReadFromCsv(FileSource, beam.PTransform):
    """Read CSV files into Arrow record batches; bad rows leave through the `error` output.

    Bounded. Order within a file is kept inside each batch; batches of one file may arrive in
    any order. Large uncompressed files are split into byte ranges cut at record boundaries
    (quoted newlines included), so several workers read one file; compressed files (`.gz`,
    `.bz2`, ...) and UTF-16/32 files are read whole. Records are found exactly as pyarrow
    parses them (a quote opens a quoted field only at the start of a field; lines end with
    `\n`, `\r\n` or a lone `\r`), so every record ends exactly once in the output or in the
    dead letters, with the line where it starts, however the file is split.

    Dead letters: rows with the wrong number of fields, a quoted field never closed, or a
    record longer than `max_record_mb` become `malformed_csv`; bytes invalid in the encoding
    or NUL bytes `invalid_encoding`; values that do not convert to their column's type
    `cast_failed`. A file that is not text in `encoding` (compressed data under a plain name,
    UTF-16/32 text read as UTF-8, binary data) fails with one `ConnectorError` naming it.

    Nulls: an unquoted field equal to one of `null_values` (the empty field by default) is
    null; a quoted field is never null unless `quoted_nulls` is set, so `""` reads as the
    empty string in a text column and `"NULL"` as the text `NULL` (what `WriteToCsv` writes
    reads back equal).

    Undeclared columns are inferred from a sample; integers beyond int64 infer
    `decimal128(38, 0)` (or `string` past 38 digits), never a rounding float64.

    Returns:
        `WithErrors(output, error)`: batches, and `DeadLetter`s.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        path: str | list[str],
        *,
        columns: dict[str, str] | None = None,
        column_names: list[str] | None = None,
        header: bool = True,
        delimiter: str = ",",
        quote_char: str | None = '"',
        escape_char: str | None = None,
        encoding: str = "utf-8",
        null_values: list[str] | None = None,
        quoted_nulls: bool = False,
        infer_bytes: int = 1 << 20,
        split_size_mb: float = 64,
        block_size_mb: float = 2,
        max_record_mb: float = 64,
        split: bool | None = None,
        incremental: bool | str = False,
    ) -> None:
        """Args:
        path: a file, a glob pattern (`data/*.csv`) or a list of them.
        columns: types by column name (`{amount: float64, day: date}`); columns not named
            here are inferred from the first `infer_bytes` of the first file.
        column_names: names for the columns, for files without a header (or to rename).
        header: whether each file starts with a header line.
        delimiter: field separator, one character.
        quote_char: quoting character, or null for no quoting.
        escape_char: escape character inside quoted fields (`\\`), or null (the default:
            a quote inside a quoted field is doubled). Files are then not split by range.
        encoding: text encoding of the files: `utf-16` / `utf-32` (files then read whole,
            by one worker each; `utf-16-le`/`-be` without a byte-order mark) or any
            ASCII-compatible codec. A UTF-8 byte-order mark is skipped.
        null_values: unquoted strings read as null (default: empty, `NULL`, `null`, `\\N`).
        quoted_nulls: also read quoted `null_values` as null (`""`, `"NULL"`), as files
            written with every field quoted need.
        infer_bytes: how much of the first file type inference looks at.
        split_size_mb: files larger than this are read in ranges of about this size.
        block_size_mb: how much one parse call handles (bounds memory per worker); a longer
            record is read whole all the same. 2 MiB blocks keep the scan's passes in the
            processor's cache and hand batches on sooner: a 3M-row CSV -> PostgreSQL append
            took 3.0 s against 3.4 s with 16 MiB, at 290 MiB against 420 MiB.
        max_record_mb: a record longer than this becomes one `malformed_csv` dead letter
            (read past without being held in memory) instead of being parsed.
        split: cut large files into ranges (true), never (false), or when the run has more
            than one worker (null, the default: one local worker gains nothing from splits,
            which cost one extra pass over the file to find record boundaries).
        incremental: load only files no earlier successful run loaded (true: by path,
            size and modification time; `hash`: by content); see README.
        """
        super().__init__()
        self.incremental = incremental
        _check_char("delimiter", delimiter)
        if quote_char is not None:
            _check_char("quote_char", quote_char)
        if escape_char is not None:
            _check_char("escape_char", escape_char)
            if escape_char in (quote_char, delimiter):
                raise ValueError("`escape_char` must differ from `quote_char` and `delimiter`")
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ValueError(f"Unknown encoding `{encoding}`") from exc
        if split_size_mb <= 0 or block_size_mb <= 0:
            raise ValueError("`split_size_mb` and `block_size_mb` must be positive")
        if not 0 < max_record_mb <= 1024:
            raise ValueError(f"`max_record_mb` must be in (0, 1024], not `{max_record_mb}`")
        declared = {name: parse_type(t) for name, t in (columns or {}).items()}
        self.path = path
        self._files = match_files(path)
        self._split_bytes = int(split_size_mb * _MB)
        self.split = split
        self._settings = _csvparse.plan(
            self._files[0][0],
            declared=declared,
            column_names=column_names,
            header=header,
            delimiter=delimiter,
            quote_char=quote_char,
            escape_char=escape_char,
            encoding=encoding,
            null_values=list(DEFAULT_NULL_VALUES if null_values is None else null_values),
            quoted_nulls=quoted_nulls,
            infer_bytes=infer_bytes,
            block_size=int(block_size_mb * _MB),
            max_record=int(max_record_mb * _MB),
        )

    @property
    def schema(self) -> pa.Schema:
        """The schema of the output batches (without the hidden origin columns)."""
        return self._settings.schema

    def _local_stages(self) -> list[beam.DoFn]:
        syntax = self._settings.syntax
        return [_PlanRangesFn(1 << 62, syntax), _ReadRangeFn(self.label, self._settings)]

    def expand(self, pbegin):
        split = self.split if self.split is not None else _parallel(pbegin.pipeline)
        # An escape may pair across a range boundary; UTF-16/32 offsets are not text offsets.
        split = split and self._settings.escape_char is None and not self._settings.transcode
        split_bytes = self._split_bytes if split else 1 << 62
        return self._read_files(
            pbegin,
            [("PlanRanges", _PlanRangesFn(split_bytes, self._settings.syntax))],
            ("Parse", _ReadRangeFn(self.label, self._settings)),
            errors=True,
        )


def _parallel(pipeline: beam.Pipeline) -> bool:
    """Whether the pipeline may run on more than one worker (anything but one local worker)."""
    from apache_beam.options.pipeline_options import DirectOptions

    if not is_local_runner(pipeline):
        return True
    direct = pipeline.options.view_as(DirectOptions)
    return direct.direct_running_mode != "in_memory" or direct.direct_num_workers != 1


def _check_char(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
        raise ValueError(f"`{name}` must be one character (not a newline), not `{value}`")


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` with nested columns (lists, structs, maps) as JSON text: CSV is flat."""
    nested = [i for i, field in enumerate(batch.schema) if pa.types.is_nested(field.type)]
    for i in nested:
        values = [None if v is None else dumps(json_safe(v)) for v in batch.column(i).to_pylist()]
        batch = batch.set_column(i, batch.schema.field(i).name, pa.array(values, pa.string()))
    return batch


class _PublishCsv:
    """Writes every staged part into one (compressed) CSV file, atomically.

    Parts staged as text (`_CsvPartWriter`) of one schema are copied behind the header as
    they are; otherwise (columns that differ between parts, parts staged as Arrow) every part
    is read back, aligned to one schema and rendered here.
    """

    def __init__(self, target: str, folder: str, options: dict[str, Any]) -> None:
        self._target = target
        self._folder = folder
        self._options = options

    def prepare(self, parts: list[Part]) -> None:
        check_file_target(self._target)

    def __call__(self, parts: list[Part]) -> int:
        compression = self._options["compression"]
        schemas = [_part_schema(path) for path, _ in parts]
        as_text = all(path.endswith(_TEXT) for path, _ in parts) and all(
            schema.equals(schemas[0]) for schema in schemas
        )
        with replacing(self._target) as temporary:
            plain = parts and as_text and not compression  # a plain file: copied in the kernel
            with (
                open(temporary, "wb") if plain else open_compressed_writer(temporary, compression)
            ) as out:
                if parts and as_text:
                    self._header(out, schemas[0])
                    copy_parts(parts, out)
                elif parts:
                    self._write(out, parts, schemas)
        discard_folder(self._folder)
        return sum(rows for _, rows in parts)

    def _header(self, out, schema: pa.Schema) -> None:
        if self._options["header"]:
            out.write(self._render([schema.empty_table()], header=True))

    def _write(self, out, parts: list[Part], schemas: list[pa.Schema]) -> None:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        delimiter = self._options["delimiter"]
        read = _read_back(parts, schemas, schema, delimiter)
        batches = (_csv_ready(batch) for batch in read)
        first = next(batches, None)
        if first is None:
            return
        self._header(out, first.schema)
        # Rendering releases the GIL: groups of batches (~4 MiB) are rendered in threads (one a
        # usable core) and written in order; the text is what one writer would have written.
        for text in ordered_map(self._render, _groups(itertools.chain([first], batches))):
            out.write(text)

    def _render(self, batches, header: bool = False) -> pa.Buffer:
        text = pa.BufferOutputStream()
        options = _write_options(self._options["delimiter"], header)
        with pacsv.CSVWriter(text, batches[0].schema, write_options=options) as writer:
            for batch in batches:
                writer.write(batch)
        return text.getvalue()


def _write_options(delimiter: str, header: bool = False) -> pacsv.WriteOptions:
    # "needed" quotes every text value and never a null: null is an empty field, the empty
    # string `""`, so `ReadFromCsv` reads both back apart.
    return pacsv.WriteOptions(include_header=header, delimiter=delimiter, quoting_style="needed")


_TEXT: Final = ".csv"
_SCHEMA: Final = ".schema"
_LONGEST: Final = b"beam_etl.longest_record"
_BLOCK_BYTES: Final = 4 << 20  # reading text parts back
_QUEUED: Final = 4  # batches waiting for a part's renderer (memory stays bounded)


def _renders_exactly(schema: pa.Schema) -> bool:
    """Whether every column's CSV text reads back as the same values with the same type
    (numbers, booleans, text, dates, timestamps, decimals): a part of such columns can be
    staged as text and, should it need aligning with other parts, read back."""
    t = pa.types
    return all(
        t.is_integer(f.type)
        or t.is_floating(f.type)
        or t.is_boolean(f.type)
        or t.is_string(f.type)
        or t.is_large_string(f.type)
        or t.is_date32(f.type)
        or t.is_timestamp(f.type)
        or (t.is_decimal128(f.type) and f.type.scale >= 0)  # a negative one: `1.23E+4`
        for f in schema
    )


def _record_bound(batch: pa.RecordBatch) -> int:
    """A bound of the length of `batch`'s longest record as CSV text: a text field at most
    twice its bytes (every quote doubled) and its quotes, any other field 64 characters."""
    bound = 0
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            longest = pc.max(pc.binary_length(column)).as_py() or 0
            bound += 2 * longest + 3
        else:
            bound += 64
    return bound


def _part_schema(path: str) -> pa.Schema:
    if path.endswith(_TEXT):
        with open(path + _SCHEMA, "rb") as source:
            return pa.ipc.read_schema(pa.py_buffer(source.read()))
    return parts_schema([(path, 0)])


def _read_back(
    parts: list[Part], schemas: list[pa.Schema], schema: pa.Schema, delimiter: str
) -> Iterator[pa.RecordBatch]:
    """Yield the batches of every part (text parts, of `schemas`, parsed back), conformed to
    `schema`."""
    for (path, _), own in zip(parts, schemas):
        if not path.endswith(_TEXT):
            yield from read_parts([(path, 0)], schema)
            continue
        longest = int((own.metadata or {}).get(_LONGEST, b"0"))
        block = min(max(_BLOCK_BYTES, longest + 4096), (1 << 31) - 1)  # a record fits a block
        with (
            pa.OSFile(path, "rb") as source,
            pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(column_names=own.names, block_size=block),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types=own,
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            ) as reader,
        ):
            for batch in reader:
                yield batch if batch.schema.equals(schema) else conform_columns(batch, schema)


class _CsvPartWriter(BundleWriter):
    """Stages a bundle as the published file's CSV rows already (no header), rendered in a
    thread beside the bundle's own work, so that the publish after the verdict only copies
    bytes. One text part per schema, its schema beside it (`<part>.schema`); batches with
    columns whose text does not read back exactly (lists, binary, dictionaries, ...) are
    staged as Arrow IPC and rendered at the publish, as before."""

    suffix = _TEXT

    def __init__(self, folder: str, delimiter: str = ",") -> None:
        super().__init__(folder)
        self._delimiter = delimiter
        self._part: _TextPart | None = None
        self._arrow: IpcPartWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        batch = visible(batch)
        if batch.num_rows == 0:
            return
        if not _renders_exactly(batch.schema):
            if self._arrow is None:
                self._arrow = IpcPartWriter(self.folder)
            self._arrow.write(batch)
            return
        if self._part is not None and not self._part.schema.equals(batch.schema):
            self.parts.append(self._part.close())
            self._part = None
        if self._part is None:
            self._part = _TextPart(self.new_path(), batch.schema, self._delimiter)
        self._part.put(batch)

    def close(self) -> list[Part]:
        if self._part is not None:
            part, self._part = self._part, None
            self.parts.append(part.close())
        if self._arrow is not None:
            self.parts += self._arrow.close()
        return self.parts

    def abort(self) -> None:
        if self._part is not None:
            self._part.abandon()
            self._part = None
        if self._arrow is not None:
            with contextlib.suppress(Exception):
                self._arrow.close()  # its part is never published: only its file is closed
            self._arrow = None


class _TextPart:
    """One text part: batches go through a bounded queue to a thread that renders them."""

    def __init__(self, path: str, schema: pa.Schema, delimiter: str) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._delimiter = delimiter
        self._failure: BaseException | None = None
        self._stopped = False
        self._longest = 0  # a bound of the longest record's text, for reading it back
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUED)
        self._thread = threading.Thread(target=self._render, daemon=True)
        self._thread.start()

    def _render(self) -> None:
        try:
            options = _write_options(self._delimiter)
            with (
                pa.OSFile(self.path, "wb") as out,
                pacsv.CSVWriter(out, self.schema, write_options=options) as writer,
            ):
                while (batch := self._queue.get()) is not None:
                    if self._stopped:
                        return
                    writer.write(batch)
                    self._longest = max(self._longest, _record_bound(batch))
        except BaseException as exc:  # raised in the bundle, at its next batch or its close
            self._failure = exc
            while not self._queue.empty():  # let a waiting `put` return
                self._queue.get_nowait()

    def _put(self, item: Any) -> None:
        if put_while(self._queue, item, self._going):
            return
        if self._failure is not None:
            raise self._failure

    def _going(self) -> bool:
        return self._failure is None and self._thread.is_alive()

    def put(self, batch: pa.RecordBatch) -> None:
        self._put(batch)
        self.rows += batch.num_rows

    def close(self) -> Part:
        self._put(None)
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        described = self.schema.with_metadata({_LONGEST: str(self._longest)})
        with open(self.path + _SCHEMA, "wb") as out:
            out.write(described.serialize().to_pybytes())
        return self.path, self.rows

    def abandon(self) -> None:
        self._stopped = True
        with contextlib.suppress(Exception):
            self._put(None)
        self._thread.join()


def _groups(batches, group_bytes: int = 4 << 20):
    """Yield lists of consecutive batches of about `group_bytes` of Arrow data each."""
    group: list = []
    size = 0
    for batch in batches:
        group.append(batch)
        size += batch.nbytes
        if size >= group_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


class WriteToCsv(beam.PTransform):
    """Write record batches to one CSV file, published atomically when every bundle is done.

    Bundles stage their rows already rendered (text parts, see `_CsvPartWriter`); the publish
    step writes the header and the parts into one file under a temporary name (compressed if
    asked) and renames it into place, so a failed run never leaves a partial file at `path`;
    a re-run replaces it. A null is an empty unquoted field and every
    text value is quoted (the empty string as `""`, the text `NULL` as `"NULL"`), so
    `ReadFromCsv` reads the file back equal; dates and timestamps are ISO 8601; nested columns
    are JSON text; hidden origin columns are dropped. Batches
    with other columns are aligned to one schema (missing columns empty). Row order is not
    kept across bundles. Output: one element, the number of rows written.
    """

    GATED: ClassVar[bool] = True  # takes `Gated(rows, gates)` (see `beam_etl.core.contract`)

    def __init__(
        self,
        path: str,
        *,
        header: bool = True,
        delimiter: str = ",",
        compression: str | None = None,
    ) -> None:
        """Args:
        path: the file to write (parent folders are created).
        header: write a header line.
        delimiter: field separator, one character.
        compression: `gzip`, `bz2`, `zstd` or `none`; by default taken from the extension of
            `path` (`.gz`, `.bz2`, `.zst`), else none.
        """
        super().__init__()
        _check_char("delimiter", delimiter)
        self.path = path
        self.header = header
        self.delimiter = delimiter
        self.compression = resolve_compression(path, compression)

    def expand(self, batches):
        batches, gates = ungated(batches)
        self.staging = folder = staging_dir(self.path, uuid.uuid4().hex[:12])
        options = {"header": self.header, "delimiter": self.delimiter}
        publish = _PublishCsv(self.path, folder, options | {"compression": self.compression})
        writer = functools.partial(_CsvPartWriter, delimiter=self.delimiter)
        return batches | StageAndPublish(writer, folder, publish, step=self.label, gates=gates)
