"""Parsing of CSV byte ranges into Arrow batches and dead letters (used by `csvio`)."""

import csv as stdcsv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from beam_etl.batches import payload_of
from beam_etl.deadletter import CAST_FAILED, INVALID_ENCODING, MALFORMED_CSV, DeadLetter
from beam_etl.errors import ConnectorError
from beam_etl.io._csvscan import iter_record_blocks, last_record_end, masked, scan_records
from beam_etl.transforms.casting import cast_batch, drop_rows

_LOG = logging.getLogger(__name__)
_BOM = b"\xef\xbb\xbf"
_PARSE_BLOCK = 4 << 20


@dataclass(frozen=True, kw_only=True)
class ParseSettings:
    """Everything a worker needs to parse any range of any of the files, decided up front."""

    names: list[str]
    file_header: list[str] | None
    types: dict[str, pa.DataType]
    delimiter: str
    quote_char: str | None
    escape_char: str | None
    encoding: str
    null_values: list[str]
    block_size: int

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(name, self.types[name]) for name in self.names])

    @property
    def is_utf8(self) -> bool:
        return self.encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _read_sample(path: str, size: int) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from beam_etl.io._compressed import ChunkStream, is_compressed

    if is_compressed(path):
        return ChunkStream(path, min(size, 1 << 24)).read(size)
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            return stream.read(size)
    except Exception as exc:  # Beam raises BeamIOError, OSError ... by filesystem
        raise ConnectorError(f"Cannot read `{path}`: {exc}") from exc


def _split_header(
    line: str, delimiter: str, quote_char: str | None, escape_char: str | None = None
) -> list[str]:
    if quote_char:
        rows = list(
            stdcsv.reader([line], delimiter=delimiter, quotechar=quote_char, escapechar=escape_char)
        )
    else:
        rows = list(stdcsv.reader([line], delimiter=delimiter, quoting=stdcsv.QUOTE_NONE))
    return [name.strip() for name in rows[0]] if rows else []


def plan(
    path: str,
    *,
    declared: dict[str, pa.DataType],
    column_names: list[str] | None,
    header: bool,
    delimiter: str,
    quote_char: str | None,
    escape_char: str | None = None,
    encoding: str,
    null_values: list[str],
    infer_bytes: int,
    block_size: int,
) -> ParseSettings:
    """Fix column names and types from the declared ones and a sample of the first file."""
    quote = ord(quote_char) if quote_char else None
    escape = ord(escape_char) if escape_char else None
    raw = _read_sample(path, infer_bytes)
    whole = raw.removeprefix(_BOM).decode(encoding, errors="replace").encode("utf-8")
    if len(raw) >= infer_bytes:  # a cut sample: keep its whole records only
        cut = last_record_end(masked(whole, quote, escape), quote)
        whole = whole[:cut] if cut > 0 else whole
    records = scan_records(masked(whole, quote, escape), 1, quote).nonempty()
    file_header = None
    if header:
        if not len(records):
            raise ConnectorError(f"`{path}` is empty: it has no header line to name the columns")
        first = whole[records.starts[0] : records.ends[0]].decode("utf-8")
        file_header = _split_header(first, delimiter, quote_char, escape_char)
        whole = whole[records.starts[1] :] if len(records) > 1 else b""
    names = list(column_names or file_header or declared)
    if not names:
        raise ValueError("Give `column_names` or `columns` when `header` is false")
    if file_header is not None and len(names) != len(file_header):
        raise ValueError(
            f"`column_names` has {len(names)} names but `{path}` has {len(file_header)} columns"
        )
    unknown = [name for name in declared if name not in names]
    if unknown:
        raise ValueError(
            f"Column(s) {', '.join(f'`{n}`' for n in unknown)} in `columns` not in the file "
            f"(columns: {', '.join(names)})"
        )
    types = _infer_types(whole, names, declared, delimiter, quote_char, escape_char, null_values)
    return ParseSettings(
        names=names,
        file_header=file_header,
        types=types,
        delimiter=delimiter,
        quote_char=quote_char,
        escape_char=escape_char,
        encoding=encoding,
        null_values=null_values,
        block_size=block_size,
    )


def _infer_types(
    sample: bytes,
    names: list[str],
    declared: dict[str, pa.DataType],
    delimiter: str,
    quote_char: str | None,
    escape_char: str | None,
    null_values: list[str],
) -> dict[str, pa.DataType]:
    inferred: dict[str, pa.DataType] = {}
    if sample.strip() and len(declared) < len(names):
        as_text = {name: pa.string() for name in declared}
        try:
            table = pacsv.read_csv(
                io.BytesIO(sample),
                read_options=pacsv.ReadOptions(column_names=names),
                parse_options=_parse_options(
                    delimiter, quote_char, lambda row: "skip", escape_char
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=as_text, null_values=null_values, strings_can_be_null=True
                ),
            )
            inferred = {field.name: field.type for field in table.schema}
        except pa.ArrowInvalid as exc:
            _LOG.warning("Type inference failed (%s); undeclared columns are read as text", exc)
    types = {}
    for name in names:
        data_type = declared.get(name) or inferred.get(name, pa.string())
        types[name] = pa.string() if pa.types.is_null(data_type) else data_type
    return types


def _parse_options(
    delimiter: str, quote_char: str | None, handler, escape_char: str | None = None
) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char=quote_char or False,
        escape_char=escape_char or False,
        double_quote=True,
        newlines_in_values=quote_char is not None,
        invalid_row_handler=handler,
    )


class _InvalidUtf8(Exception):
    """pyarrow met bytes that are not UTF-8: the block must be checked record by record."""


def _raise_unless_conversion_error(exc: pa.ArrowInvalid, path: str) -> None:
    text = str(exc).lower()
    if "utf8" in text or "utf-8" in text:
        raise _InvalidUtf8() from exc
    if "conversion error" not in text:
        raise ConnectorError(f"Cannot parse `{path}`: {exc}") from exc


class RangeReader:
    """Parses one byte range of one file; `records` counts the data records seen."""

    def __init__(
        self, settings: ParseSettings, step: str, path: str, first_line: int, is_first: bool
    ) -> None:
        self._s = settings
        self._step = step
        self._path = path
        self._line = first_line
        self._is_first = is_first
        self._quote = ord(settings.quote_char) if settings.quote_char else None
        self._escape = ord(settings.escape_char) if settings.escape_char else None
        self.records = 0

    def _records(self, block: bytes, line: int):
        """Return the non-empty records of `block` (escaped quotes do not count)."""
        return scan_records(masked(block, self._quote, self._escape), line, self._quote).nonempty()

    def read(self, stream: BinaryIO, length: int | None) -> Iterator:
        """Yield `(batch, lines)` pairs and `DeadLetter`s for the range."""
        first = self._is_first
        blocks = iter_record_blocks(stream, length, self._s.block_size, self._quote, self._escape)
        for block in blocks:
            newlines = block.count(b"\n")
            next_line = self._line + newlines
            if first:
                block = block.removeprefix(_BOM)
                if self._s.file_header is not None:
                    block = self._skip_header(block)
                newlines = block.count(b"\n")
            first = False
            if block:
                yield from self._parse_block(block, self._line, newlines)
            self._line = next_line

    def _skip_header(self, block: bytes) -> bytes:
        records = self._records(block, self._line)
        if not len(records):
            return b""
        text = block[records.starts[0] : records.ends[0]].decode(self._s.encoding, "replace")
        found = _split_header(text, self._s.delimiter, self._s.quote_char, self._s.escape_char)
        if found != self._s.file_header:
            raise ConnectorError(
                f"Header of `{self._path}` ({', '.join(found)}) differs from the first file's "
                f"({', '.join(self._s.file_header or [])})"
            )
        if len(records) == 1:
            return b""
        self._line = int(records.lines[1])
        return block[records.starts[1] :]

    def _decode(self, block: bytes, line: int) -> tuple[bytes, np.ndarray | None, list]:
        """Return the block as UTF-8, the lines of its records if it had to be rebuilt, and
        dead letters for records whose bytes are invalid in the encoding."""
        try:
            text = block.decode(self._s.encoding)
            return (block if self._s.is_utf8 else text.encode("utf-8")), None, []
        except UnicodeDecodeError:
            pass  # rare: find the bad records one by one below
        records = self._records(block, line)
        good, lines, letters = [], [], []
        for start, end, record_line in zip(records.starts, records.ends, records.lines):
            raw = block[start:end]
            try:
                good.append(raw.decode(self._s.encoding).encode("utf-8"))
                lines.append(int(record_line))
            except UnicodeDecodeError as exc:
                letters.append(
                    self._letter(
                        INVALID_ENCODING,
                        f"Bytes invalid in encoding `{self._s.encoding}` at byte {exc.start}",
                        int(record_line),
                        raw.decode(self._s.encoding, errors="backslashreplace"),
                    )
                )
        return b"\n".join(good) + b"\n" if good else b"", np.array(lines, np.int64), letters

    def _letter(self, reason: str, message: str, line: int | None, payload) -> DeadLetter:
        return DeadLetter(self._step, reason, message, self._path, line, None, payload)

    def _parse_block(self, block: bytes, line: int, newlines: int) -> Iterator:
        rebuilt_lines: np.ndarray | None = None
        letters: list[DeadLetter] = []
        if not self._s.is_utf8:  # transcode first; pyarrow parses UTF-8 only
            block, rebuilt_lines, letters = self._decode(block, line)
        invalid: list[str] = []
        try:
            table, failures = self._convert(block, invalid) if block else (None, [])
        except _InvalidUtf8:  # rare: find and reject the records with invalid bytes
            block, rebuilt_lines, letters = self._decode(block, line)
            invalid.clear()
            try:
                table, failures = self._convert(block, invalid) if block else (None, [])
            except _InvalidUtf8 as exc:
                raise ConnectorError(
                    f"`{self._path}` holds bytes that are not UTF-8 near line {line}"
                ) from exc
        self.records += len(letters)
        yield from letters
        if table is None:
            return
        if rebuilt_lines is not None:
            lines = rebuilt_lines
        elif table.num_rows + len(invalid) == newlines + (not block.endswith(b"\n")):
            # One record per line: no empty lines, no quoted newlines. No scan needed.
            lines = np.arange(line, line + table.num_rows + len(invalid), dtype=np.int64)
        else:
            lines = self._records(block, line).lines
        self.records += len(lines)
        bad_records = self._locate(block, line, invalid)
        for text, index in zip(invalid, bad_records):
            at = int(lines[index]) if index is not None and index < len(lines) else None
            fields = len(self._split(text))
            message = f"Expected {len(self._s.names)} fields, found {fields}"
            yield self._letter(MALFORMED_CSV, message, at, text)
        known = [i for i in bad_records if i is not None]
        lines_ok: np.ndarray | None = np.delete(lines, known) if known else lines
        if lines_ok is not None and (len(known) < len(invalid) or len(lines_ok) != table.num_rows):
            _LOG.warning("Line numbers unknown for a block of `%s` near line %d", self._path, line)
            lines_ok = None
        yield from self._emit(table, failures, lines_ok)

    def _split(self, text: str) -> list[str]:
        return _split_header(
            text.replace("\n", " "), self._s.delimiter, self._s.quote_char, self._s.escape_char
        )

    def _locate(self, block: bytes, line: int, texts: list[str]) -> list[int | None]:
        """Return the record index of each invalid row's text (None if not found)."""
        if not texts:
            return []
        starts = self._records(block, line).starts
        used: set[int] = set()
        found: list[int | None] = []
        for text in texts:
            needle, position, index = text.encode("utf-8"), 0, None
            while (position := block.find(needle, position)) >= 0:
                candidate = int(np.searchsorted(starts, position))
                is_start = candidate < len(starts) and starts[candidate] == position
                if is_start and candidate not in used:
                    index = candidate
                    used.add(index)
                    break
                position += 1
            found.append(index)
        return found

    def _convert(self, block: bytes, invalid: list[str]):
        def collect(row) -> str:
            invalid.append(row.text)
            return "skip"

        def parse(types: dict[str, pa.DataType]) -> pa.Table:
            return pacsv.read_csv(
                io.BytesIO(block),
                read_options=pacsv.ReadOptions(column_names=self._s.names, block_size=_PARSE_BLOCK),
                parse_options=_parse_options(
                    self._s.delimiter, self._s.quote_char, collect, self._s.escape_char
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    null_values=self._s.null_values,
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )

        try:
            return parse(self._s.types), []
        except pa.ArrowInvalid as exc:
            _raise_unless_conversion_error(exc, self._path)
        invalid.clear()  # parsing again reports the same invalid rows again
        as_text = {name: pa.string() for name in self._s.names}
        try:
            table = parse(as_text).combine_chunks()
        except pa.ArrowInvalid as exc:
            _raise_unless_conversion_error(exc, self._path)
            raise
        batch = table.to_batches()[0] if table.num_rows else None
        if batch is None:
            return table.cast(self._s.schema), []
        typed, failures = cast_batch(batch, self._s.types)
        return typed, [(failure, batch) for failure in failures]

    def _emit(self, table, failures, lines: np.ndarray | None) -> Iterator:
        if failures:
            texts = failures[0][1]
            bad_rows = sorted({failure.row for failure, _ in failures})
            rows = {i: payload_of(texts.slice(i, 1).to_pylist()[0]) for i in bad_rows}
            messages: dict[int, list[str]] = {}
            for failure, _ in failures:
                messages.setdefault(failure.row, []).append(failure.message)
            for row in bad_rows:  # one dead letter per row, naming every failing column
                at = int(lines[row]) if lines is not None else None
                yield self._letter(CAST_FAILED, "; ".join(messages[row]), at, rows[row])
            table = drop_rows(table, set(bad_rows))
            if lines is not None:
                lines = np.delete(lines, bad_rows)
        batches = table.to_batches() if isinstance(table, pa.Table) else [table]
        offset = 0
        for batch in batches:
            if batch.num_rows:
                part = lines[offset : offset + batch.num_rows] if lines is not None else None
                yield batch, part
            offset += batch.num_rows
