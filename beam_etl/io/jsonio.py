"""JSON source and sink on pyarrow: JSON Lines or one top-level array, plain or compressed.

Reading is planned at construction (files matched, schema declared or inferred from the first
file) so that every worker parses with the same schema, then runs as: file list -> shuffle ->
parse. Blocks of whole lines go to `pyarrow.json.read_json` in one call; only a block that
pyarrow refuses is looked at line by line, to turn exactly the bad lines into dead letters.
"""

import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Final, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from beam_etl.core.batches import dumps, json_safe, payload_of, visible, with_origin
from beam_etl.core.casting import cast_batch, drop_rows, reads_as_text
from beam_etl.core.contract import ungated
from beam_etl.core.datatypes import parse_type, type_name
from beam_etl.core.deadletter import CAST_FAILED, ERROR, INVALID_ENCODING, OUTPUT, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.io._compressed import (
    HEAD_BYTES,
    check_head,
    open_compressed_writer,
    read_chunks,
    resolve_compression,
)
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
from beam_etl.io._local import FileSource

#: Reason code of a line that is not JSON, or JSON that is not an object.
MALFORMED_JSON: Final = "malformed_json"
_FORMATS: Final = ("auto", "lines", "array")
_MB: Final = 1 << 20
_INT64: Final = range(-(1 << 63), 1 << 63)
_DEEP: Final = "nests arrays or objects too deeply to read (Python's limit is about 1,000 levels)"
_BOM: Final = b"\xef\xbb\xbf"
# Types pyarrow.json cannot read from JSON text: read as strings, then cast with casting.py.
_CAST_AFTER: Final = (
    pa.types.is_date,
    pa.types.is_time,
    pa.types.is_binary,
    pa.types.is_duration,
    reads_as_text,
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?"
)


def _is_blank(data: bytes) -> bool:
    return not data.strip()


def _lines_if_none_blank(block: bytes) -> int:
    """The number of lines of `block`, or -1 if one is empty (`\n` or `\r\n` alone)."""
    data = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    lengths = np.diff(newlines, prepend=-1)  # each line with its `\n`
    crlf_only = (lengths == 2) & (data[np.maximum(newlines - 1, 0)] == 13)
    if len(newlines) and ((lengths == 1) | crlf_only).any():
        return -1
    return len(newlines) + (not block.endswith(b"\n"))


@dataclass(frozen=True, kw_only=True)
class JsonSettings:
    """Everything a worker needs to parse any of the files, decided at construction."""

    schema: pa.Schema  # typed, nested (before flattening)
    format: str
    flatten: bool
    block_size: int

    @property
    def read_schema(self) -> pa.Schema:
        """The schema given to pyarrow: columns it cannot read from JSON are read as text."""
        fields = [pa.field(f.name, pa.string()) if _cast_after(f.type) else f for f in self.schema]
        return pa.schema(fields)

    @property
    def output_schema(self) -> pa.Schema:
        return _flatten(self.schema.empty_table()).schema if self.flatten else self.schema


def _cast_after(data_type: pa.DataType) -> bool:
    return any(check(data_type) for check in _CAST_AFTER)


def _flatten(table: pa.Table) -> pa.Table:
    while any(pa.types.is_struct(t) for t in table.schema.types):
        table = table.flatten()  # one level per call: `a.b`, then `a.b.c`
    return table


def _no_null_type(data_type: pa.DataType) -> pa.DataType:
    """Replace `null` (a key that was null in every sampled row) by `string`, also nested."""
    if pa.types.is_null(data_type):
        return pa.string()
    if pa.types.is_struct(data_type):
        return pa.struct([f.with_type(_no_null_type(f.type)) for f in data_type])
    if pa.types.is_list(data_type):
        return pa.list_(_no_null_type(data_type.value_type))
    return data_type


def _temporal_type(values: list[str]) -> pa.DataType | None:
    """Date or timestamp when every sampled text value is one (pyarrow takes dates for
    timestamps and drops time zones), else None."""
    if not values:
        return None
    if all(_DATE.fullmatch(v) for v in values):
        return pa.date32()
    if not all(_DATETIME.fullmatch(v) for v in values):
        return None
    zoned = [_DATETIME.fullmatch(v).group(3) is not None for v in values]  # type: ignore[union-attr]
    if all(zoned):
        return pa.timestamp("us", tz="UTC")
    return None if any(zoned) else pa.timestamp("us")


def infer_schema(
    path: str, sample_bytes: int, file_format: str, declared: dict[str, pa.DataType]
) -> pa.Schema | None:
    """Infer the columns from the first `sample_bytes` of `path` (None if it has no object).

    Declared columns keep their types (their values are not looked at) and their place
    among the keys in order of first appearance; declared keys never seen come last.
    """
    chunks, sample = read_chunks(path, min(sample_bytes, 4 * _MB)), b""
    for chunk in chunks:
        sample += chunk
        if len(sample) >= sample_bytes:
            break
    complete = len(sample) < sample_bytes
    chunks.close()
    check_head(path, sample[:HEAD_BYTES], reader="JSON")
    text = sample.removeprefix(_BOM).decode("utf-8", errors="replace")
    if _detect(text.encode(), file_format) == "array":
        objects = [obj for obj, _ in _array_elements(text, path, strict=complete)]
    else:
        lines = text.split("\n") if complete else text.split("\n")[:-1]
        objects = [obj for obj in map(_loads_or_none, lines) if obj is not None]
    rows = [obj for obj in objects if isinstance(obj, dict)]
    if not rows:
        return None
    order = list(dict.fromkeys(key for row in rows for key in row)) + list(declared)
    types = dict(declared)
    try:
        table = _infer_table([{k: v for k, v in r.items() if k not in types} for r in rows])
    except pa.ArrowInvalid:  # a key with values of several JSON types: read it as text
        for key in order:
            if key not in types and _mixed([{key: r[key]} for r in rows if key in r]):
                types[key] = pa.string()
        table = _infer_table([{k: v for k, v in r.items() if k not in types} for r in rows])
    for field in table.schema:
        data_type = _no_null_type(field.type)
        if pa.types.is_string(data_type) or pa.types.is_timestamp(data_type):
            texts = [r[field.name] for r in rows if isinstance(r.get(field.name), str)]
            data_type = _temporal_type(texts) or pa.string()
        if pa.types.is_floating(data_type):
            numbers = [r[field.name] for r in rows if r.get(field.name) is not None]
            data_type = _exact_number_type(numbers) or data_type
        types[field.name] = data_type
    return pa.schema([(name, types[name]) for name in dict.fromkeys(order)])


def _exact_number_type(values: list) -> pa.DataType | None:
    """decimal128(38, 0) for sampled integers beyond int64 (string past 38 digits, or with
    fractions mixed in), which float64 would round; None when there are none."""
    integers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if all(v in _INT64 for v in integers):
        return None
    if len(integers) < len(values) or max(len(str(abs(v))) for v in integers) > 38:
        return pa.string()
    return pa.decimal128(38, 0)


def _infer_table(rows: list[dict]) -> pa.Table:
    return pajson.read_json(io.BytesIO("\n".join(map(dumps, rows)).encode()))


def _mixed(rows: list[dict]) -> bool:
    try:
        _infer_table(rows)
        return False
    except pa.ArrowInvalid:
        return True


def _loads_or_none(line: str) -> Any:
    try:
        return json.loads(line) if line.strip() else None
    except (ValueError, RecursionError):
        return None


def _detect(start: bytes, file_format: str) -> str:
    if file_format != "auto":
        return file_format
    head = start.removeprefix(_BOM).lstrip()
    return "array" if head.startswith(b"[") else "lines"


def _array_elements(text: str, path: str, strict: bool = True) -> Iterator[tuple[Any, int]]:
    """Yield `(element, line)` for each element of the top-level JSON array in `text`.

    Raises:
        ConnectorError: `text` is not one JSON array (only when `strict`; else stop there).
    """
    decoder, end = json.JSONDecoder(), len(text)

    def skip(at: int) -> int:
        while at < end and text[at] in " \t\r\n":
            at += 1
        return at

    def fail(pos: int, what: str) -> ConnectorError:
        line = text.count("\n", 0, pos) + 1
        return ConnectorError(f"`{path}` is not a valid JSON array: {what} (line {line})")

    pos = skip(0)
    if text[pos : pos + 1] != "[":
        raise fail(pos, "it does not start with `[`")
    pos, line, counted = skip(pos + 1), 1, 0
    closed = text[pos : pos + 1] == "]"
    while not closed:
        try:
            value, after = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if not strict:
                return
            raise fail(pos, exc.msg) from exc
        except RecursionError as exc:
            if not strict:
                return
            raise fail(pos, f"an element {_DEEP}") from exc
        line, counted = line + text.count("\n", counted, pos), pos
        yield value, line
        pos = skip(after)
        closed = text[pos : pos + 1] == "]"
        if not closed and text[pos : pos + 1] != ",":
            if not strict:
                return
            raise fail(pos, "expecting `,` or `]`" if pos < end else "it ends before its `]`")
        pos = skip(pos + 1)
    if strict and skip(pos + 1) < end:
        raise fail(pos, "text after the closing `]`")


class _Record(NamedTuple):
    line: int
    raw: bytes  # one JSON object on one line
    obj: dict


class _FileParser:
    """Parses one file into `(batch, lines)` pairs and dead letters; counts `records`."""

    def __init__(self, settings: JsonSettings, step: str, path: str) -> None:
        self._s = settings
        self._read_schema = settings.read_schema
        self._step = step
        self._path = path
        self.records = 0

    def read(self) -> Iterator:
        chunks = read_chunks(self._path, self._s.block_size)
        head = b""
        for chunk in chunks:  # the first bytes, up to a non-blank one: lines or an array?
            head += chunk
            if len(head) >= HEAD_BYTES and not _is_blank(head.removeprefix(_BOM)):
                break
        check_head(self._path, head, reader="JSON")
        rest = (c for part in ([head.removeprefix(_BOM)], chunks) for c in part)
        if _detect(head, self._s.format) == "array":
            yield from self._read_array(b"".join(rest))
        else:
            yield from self._read_lines(rest)

    def _read_lines(self, chunks: Iterator[bytes]) -> Iterator:
        parts: list[bytes] = []  # joined once a block is full and a line ends: no quadratic copy
        size, line = 0, 1
        for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size < self._s.block_size or b"\n" not in chunk:
                continue
            pending = b"".join(parts)
            cut = pending.rfind(b"\n") + 1
            yield from self._parse_block(pending[:cut], line)
            line += pending.count(b"\n", 0, cut)
            parts, size = [pending[cut:]], len(pending) - cut
        pending = b"".join(parts)
        if not _is_blank(pending):
            yield from self._parse_block(pending, line)

    def _read_array(self, data: bytes) -> Iterator:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConnectorError(f"`{self._path}` is not UTF-8 (byte {exc.start})") from exc
        records: list[_Record] = []
        for value, line in _array_elements(text, self._path):
            self.records += 1
            if isinstance(value, dict):
                obj = self._coerce(value)
                records.append(_Record(line, dumps(obj).encode(), obj))
            else:
                yield self._not_object(value, line, dumps(value))
        for start in range(0, len(records), 50_000):
            yield from self._finish(*self._load(records[start : start + 50_000]))

    def _parse_block(self, block: bytes, line: int) -> Iterator:
        try:
            block.decode("utf-8")  # pyarrow.json does not check that strings are UTF-8
            table = self._parse(block)
        except (UnicodeDecodeError, pa.ArrowInvalid):  # rare: check line by line
            yield from self._parse_slowly(block, line)
            return
        if table.num_rows == _lines_if_none_blank(block):
            lines = np.arange(line, line + table.num_rows, dtype=np.int64)
        else:  # blank lines in the block: pyarrow skips them
            nonblank = [line + i for i, raw in enumerate(block.split(b"\n")) if not _is_blank(raw)]
            lines = np.array(nonblank, dtype=np.int64)
            if len(lines) != table.num_rows:  # two objects on one line, ...: look line by line
                yield from self._parse_slowly(block, line)
                return
        self.records += table.num_rows
        yield from self._finish([table], lines, [])

    def _parse_slowly(self, block: bytes, line: int) -> Iterator:
        records: list[_Record] = []
        for offset, raw in enumerate(block.split(b"\n")):
            if _is_blank(raw):
                continue
            self.records += 1
            found = self._record(raw, line + offset)
            if isinstance(found, DeadLetter):
                yield found
            else:
                records.append(found)
        yield from self._finish(*self._load(records))

    def _record(self, raw: bytes, line: int) -> "_Record | DeadLetter":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"Bytes invalid in encoding `utf-8` at byte {exc.start}"
            payload = raw.decode("utf-8", errors="backslashreplace")
            return self._letter(INVALID_ENCODING, message, line, payload)
        try:
            value = json.loads(text)
        except RecursionError:
            return self._deep(raw, line)
        except ValueError as exc:
            where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            message = f"Line is not valid JSON: {getattr(exc, 'msg', exc)}{where}"
            return self._letter(MALFORMED_JSON, message, line, text.strip())
        if not isinstance(value, dict):
            return self._not_object(value, line, text.strip())
        obj = self._coerce(value)
        return _Record(line, dumps(obj).encode() if obj is not value else raw, obj)

    def _deep(self, raw: bytes, line: int) -> "_Record | DeadLetter":
        """A line nested deeper than Python's json module follows: pyarrow reads it as the
        fast path does (keys not in the schema ignored), or it is `malformed_json`."""
        try:
            obj = self._parse(raw).to_pylist()[0]
        except (pa.ArrowInvalid, RecursionError, IndexError):
            text = raw.decode("utf-8", errors="backslashreplace").strip()
            payload = text[:1024] + "..." if len(text) > 1024 else text
            return self._letter(MALFORMED_JSON, f"Line {_DEEP}", line, payload)
        return _Record(line, dumps(json_safe(obj)).encode(), obj)

    def _not_object(self, value: Any, line: int, payload: str) -> DeadLetter:
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(value), "number"
        )
        return self._letter(MALFORMED_JSON, f"Expected a JSON object, found {kind}", line, payload)

    def _coerce(self, obj: dict) -> dict:
        """Numbers and booleans in a text column become their JSON text (`5` -> `"5"`)."""
        changed = None
        for field in self._read_schema:
            value = obj.get(field.name)
            if pa.types.is_string(field.type) and isinstance(value, (int, float)):
                changed = changed or dict(obj)
                changed[field.name] = dumps(value)
        return changed or obj

    def _parse(self, block: bytes, schema: pa.Schema | None = None) -> pa.Table:
        options = pajson.ParseOptions(
            explicit_schema=schema or self._read_schema, unexpected_field_behavior="ignore"
        )
        try:
            return pajson.read_json(io.BytesIO(block), parse_options=options)
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc):
                raise
        # A line longer than pyarrow's parse block (1 MiB): parse with a block that holds it.
        size = min(len(block) + 64, (1 << 31) - 1)
        read = pajson.ReadOptions(block_size=size)
        return pajson.read_json(io.BytesIO(block), read_options=read, parse_options=options)

    def _load(self, records: list[_Record]) -> tuple[list[pa.Table], np.ndarray, list]:
        """Parse records, halving the list around pyarrow failures to isolate the bad ones."""
        if not records:
            return [], np.array([], np.int64), []
        try:
            table = self._parse(b"\n".join(r.raw for r in records))
            return [table], np.array([r.line for r in records], np.int64), []
        except pa.ArrowInvalid as exc:
            if len(records) == 1:
                return [], np.array([], np.int64), [self._why(records[0], exc)]
        middle = len(records) // 2
        left, right = self._load(records[:middle]), self._load(records[middle:])
        return left[0] + right[0], np.concatenate([left[1], right[1]]), left[2] + right[2]

    def _why(self, record: _Record, exc: pa.ArrowInvalid) -> DeadLetter:
        messages = []
        for field in self._read_schema:
            value = record.obj.get(field.name)
            try:
                self._parse(dumps({field.name: value}).encode(), pa.schema([field]))
            except pa.ArrowInvalid:
                data_type = self._s.schema.field(field.name).type
                shown = value if isinstance(value, str) else dumps(json_safe(value))
                expected = type_name(data_type)
                messages.append(
                    f"Value `{shown}` in column `{field.name}` is not a valid {expected}"
                )
        if not messages:
            message = f"Cannot load the object: {exc}"
            return self._letter(MALFORMED_JSON, message, record.line, json_safe(record.obj))
        payload = json_safe(record.obj)
        return self._letter(CAST_FAILED, "; ".join(messages), record.line, payload)

    def _letter(self, reason: str, message: str, line: int | None, payload: Any) -> DeadLetter:
        return DeadLetter(self._step, reason, message, self._path, line, None, payload)

    def _finish(self, tables: list[pa.Table], lines: np.ndarray, letters: list) -> Iterator:
        """Yield the dead letters, then cast the text-read columns, flatten, add origins."""
        yield from letters
        if not tables or not len(lines):
            return
        table = pa.concat_tables(tables).combine_chunks()
        batch = table.to_batches()[0]
        casts = {f.name: f.type for f in self._s.schema if _cast_after(f.type)}
        batch, failures = cast_batch(batch, casts) if casts else (batch, [])
        if failures:
            texts = table.to_batches()[0]
            bad_rows = sorted({failure.row for failure in failures})
            for row in bad_rows:  # one dead letter per row, naming every failing column
                message = "; ".join(f.message for f in failures if f.row == row)
                payload = payload_of(texts.slice(row, 1).to_pylist()[0])
                yield self._letter(CAST_FAILED, message, int(lines[row]), payload)
            batch, lines = drop_rows(batch, set(bad_rows)), np.delete(lines, bad_rows)
        out = pa.Table.from_batches([batch])
        if self._s.flatten:
            out = _flatten(out)
        if out.num_rows:
            yield with_origin(out.combine_chunks().to_batches()[0], self._path, lines.tolist())


class _ReadFileFn(beam.DoFn):
    def __init__(self, step: str, settings: JsonSettings) -> None:
        self._step = step
        self._settings = settings

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)

    def process(self, path: str):
        parser = _FileParser(self._settings, self._step, path)
        for result in parser.read():
            if isinstance(result, DeadLetter):
                yield beam.pvalue.TaggedOutput(ERROR, result)
            else:
                yield result
        self._rows_read.inc(parser.records)


class ReadFromJson(FileSource, beam.PTransform):
    """Read JSON Lines files, or files holding one JSON array, into Arrow record batches.

    Bounded. Every file is read by one worker, whole (compressed files by their extension:
    `.gz`, `.bz2`, `.zst`, `.xz`, `.deflate`; a truncated or corrupt one fails the run with a
    `ConnectorError` naming it, never yields a shorter output). Array files are held in memory.
    Order within a file is kept inside each batch. Keys not in the schema are ignored, missing
    keys are null; numbers and booleans in a text column become their JSON text; `NaN`,
    `Infinity` and `-Infinity` (not JSON, but written by many encoders) are floats. Lines that
    are not JSON, JSON that is not an object, or lines nested too deeply to read (about 1,000
    levels, where a key of the schema holds the depth) become `malformed_json` dead letters
    (bytes that are not UTF-8: `invalid_encoding`), and values that do not fit their column's
    type `cast_failed` dead letters, each with file and line (an array element's first line).
    Lines of any length are read. A file that is not UTF-8 JSON text (compressed data under a
    plain name, UTF-16/32 text, binary data) fails with one `ConnectorError` naming it, as
    does an array file that is not one valid JSON array.

    Returns:
        `WithErrors(output, error)`: batches, and `DeadLetter`s.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        path: str | list[str],
        *,
        format: str = "auto",
        columns: dict[str, str] | None = None,
        flatten: bool = False,
        infer_bytes: int = 1 << 20,
        block_size_mb: float = 16,
        incremental: bool | str = False,
    ) -> None:
        """Args:
        path: a file, a glob pattern (`data/*.jsonl.gz`) or a list of them.
        format: `lines` (one object per line), `array` (one top-level array of objects), or
            `auto`: `array` for a file whose first non-blank character is `[`.
        columns: types of top-level keys by name (`{amount: decimal(12,2), day: date}`); keys
            not named here are inferred from the first `infer_bytes` of the first file that
            holds an object (text that is only ISO dates or timestamps becomes `date` or
            `timestamp[us]` / `timestamp[us, UTC]`; integers beyond int64 become
            `decimal128(38, 0)`, or `string` past 38 digits; declare other decimals).
        flatten: nested objects become columns `a.b` instead of struct columns.
        infer_bytes: how much of the first file type inference looks at.
        block_size_mb: how much text one parse call handles (bounds memory per worker).
        incremental: load only files no earlier successful run loaded (true: by path,
            size and modification time; `hash`: by content); see README.
        """
        super().__init__()
        self.incremental = incremental
        if format not in _FORMATS:
            raise ValueError(f"Unknown format `{format}`; use one of {', '.join(_FORMATS)}")
        if infer_bytes <= 0 or block_size_mb <= 0:
            raise ValueError("`infer_bytes` and `block_size_mb` must be positive")
        declared = {name: parse_type(t) for name, t in (columns or {}).items()}
        self.path = path
        self._files = [name for name, _ in match_files(path)]
        inferred = None
        for name in self._files:  # the first file may hold no object (empty, only rejects)
            inferred = infer_schema(name, infer_bytes, format, declared)
            if inferred is not None:
                break
        if inferred is None and not declared:
            raise ConnectorError(
                f"No JSON object in `{self._files[0]}` to infer the columns from (in its first "
                f"{infer_bytes:,} bytes: `infer_bytes`); declare them in `columns`"
            )
        self._settings = JsonSettings(
            schema=inferred or pa.schema(list(declared.items())),
            format=format,
            flatten=flatten,
            block_size=int(block_size_mb * _MB),
        )

    @property
    def schema(self) -> pa.Schema:
        """The schema of the output batches (without the hidden origin columns)."""
        return self._settings.output_schema

    def _local_stages(self) -> list[beam.DoFn]:
        return [_ReadFileFn(self.label, self._settings)]

    def expand(self, pbegin):
        return self._read_files(
            pbegin, [], ("Parse", _ReadFileFn(self.label, self._settings)), errors=True
        )


class _JsonLinesWriter(BundleWriter):
    """Writes a bundle's rows as JSON Lines to one part file."""

    suffix = ".jsonl"

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self._path = self.new_path()
        self._file = open(self._path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        rows = visible(batch).to_pylist()
        self._file.write("".join(f"{dumps(json_safe(row))}\n" for row in rows))
        self._rows += len(rows)

    def close(self) -> list[Part]:
        self._file.close()
        return [(self._path, self._rows)]


class _PublishJson:
    """Joins the staged parts into one file (compressed, as an array if asked), atomically."""

    def __init__(self, target: str, folder: str, file_format: str, compression: str | None):
        self._target = target
        self._folder = folder
        self._format = file_format
        self._compression = compression

    def prepare(self, parts: list[Part]) -> None:
        check_file_target(self._target)

    def __call__(self, parts: list[Part]) -> int:
        with (
            replacing(self._target) as temporary,
            open_compressed_writer(temporary, self._compression) as out,
        ):
            if self._format == "lines":
                copy_parts(parts, out)
            else:
                self._write_array(out, parts)
        discard_folder(self._folder)
        return sum(rows for _, rows in parts)

    @staticmethod
    def _write_array(out: BinaryIO, parts: list[Part]) -> None:
        separator = b"[\n"
        for path, _ in parts:
            with open(path, "rb") as part:
                for line in part:
                    out.write(separator + line.rstrip(b"\n"))
                    separator = b",\n"
        out.write(b"[\n]\n" if separator == b"[\n" else b"\n]\n")


class WriteToJson(beam.PTransform):
    """Write record batches to one JSON file, published atomically when every bundle is done.

    The file is written under a temporary name and renamed into place at the end, so a failed
    run never leaves a partial file at `path`; a re-run replaces it. Hidden origin columns are
    dropped; dates and timestamps are ISO 8601 text (with the offset when zoned), decimals are
    text, structs are objects, non-finite floats are text (`"nan"`). Row order is not kept
    across bundles. Output: one element, the number of rows written.
    """

    GATED: ClassVar[bool] = True  # takes `Gated(rows, gates)` (see `beam_etl.core.contract`)

    def __init__(self, path: str, *, format: str = "lines", compression: str | None = None) -> None:
        """Args:
        path: the file to write (parent folders are created).
        format: `lines` (JSON Lines) or `array` (one JSON array of objects).
        compression: `gzip`, `bz2`, `zstd` or `none`; by default taken from the extension of
            `path` (`.gz`, `.bz2`, `.zst`), else none.
        """
        super().__init__()
        if format not in ("lines", "array"):
            raise ValueError(f"Unknown format `{format}`; use lines or array")
        self.path = path
        self.format = format
        self.compression = resolve_compression(path, compression)

    def expand(self, batches):
        batches, gates = ungated(batches)
        self.staging = folder = staging_dir(self.path, uuid.uuid4().hex[:12])
        return batches | StageAndPublish(
            _JsonLinesWriter,
            folder,
            _PublishJson(self.path, folder, self.format, self.compression),
            step=self.label,
            gates=gates,
        )
