"""Parsing of CSV byte ranges into Arrow batches and dead letters (used by `csvio`).

Nulls and quoting: an unquoted field equal to one of `null_values` (by default the empty
field, `NULL`, `null`, `\\N`) is null; a quoted field is never a null marker unless
`quoted_nulls` is set, so `""` is the empty string in a text column and `"NULL"` the text
`NULL` (in a column of another type a quoted empty field is then a `cast_failed` value).
"""

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_etl.core.batches import payload_of
from beam_etl.core.casting import cast_batch, drop_rows, reads_as_text
from beam_etl.core.deadletter import CAST_FAILED, INVALID_ENCODING, MALFORMED_CSV, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.io._compressed import (
    HEAD_BYTES,
    ChunkStream,
    Prefixed,
    Transcoded,
    check_head,
    is_ascii_compatible,
    is_compressed,
)
from beam_etl.io._csvscan import (
    Block,
    Oversized,
    Readable,
    Records,
    Syntax,
    iter_record_blocks,
    last_record_end,
    masked,
    scan_records,
)

_LOG = logging.getLogger(__name__)
_BOM = b"\xef\xbb\xbf"
_PARSE_BLOCK = 4 << 20
_MAX_PARSE_BLOCK = (1 << 31) - 1  # pyarrow's block size is an int32
_PLAIN_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$"


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
    quoted_nulls: bool = False
    block_size: int
    max_record: int = 64 << 20

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(name, self.types[name]) for name in self.names])

    @property
    def syntax(self) -> Syntax:
        return _syntax(self.delimiter, self.quote_char, self.escape_char)

    @property
    def transcode(self) -> bool:
        """The files are decoded to UTF-8 before scanning (UTF-16/32: not ASCII-compatible)."""
        return not is_ascii_compatible(self.encoding)

    @property
    def is_utf8(self) -> bool:
        """The bytes the scanner and pyarrow see are UTF-8 (as read, or once transcoded)."""
        name = self.encoding.lower().replace("_", "-")
        return self.transcode or name in ("utf-8", "utf8", "utf-8-sig")


def _syntax(delimiter: str, quote_char: str | None, escape_char: str | None) -> Syntax:
    return Syntax(
        ord(delimiter),
        ord(quote_char) if quote_char else None,
        ord(escape_char) if escape_char else None,
    )


def open_text(stream: Readable, path: str, encoding: str) -> Readable:
    """Check the first bytes of a file (`check_head`) and return a stream of its text from the
    first byte after any byte-order mark, transcoded to UTF-8 when `encoding` is UTF-16/32.

    Raises:
        ConnectorError: the file is compressed under a plain name, in another encoding than
            `encoding`, or binary.
    """
    head = stream.read(HEAD_BYTES)
    check_head(path, head, reader="CSV", encoding=encoding)
    text: Readable = Prefixed(head, stream)
    if not is_ascii_compatible(encoding):
        text = Transcoded(text, encoding, path)
    start = text.read(len(_BOM))
    return Prefixed(start.removeprefix(_BOM), text)


def _read_sample(path: str, size: int, encoding: str) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if is_compressed(path):
        return open_text(ChunkStream(path, min(size, 1 << 24)), path, encoding).read(size)
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            return open_text(stream, path, encoding).read(size)
    except ConnectorError:
        raise
    except Exception as exc:  # Beam raises BeamIOError, OSError ... by filesystem
        raise ConnectorError(f"Cannot read `{path}`: {exc}") from exc


def split_fields(text: str, delimiter: str, quote_char: str | None, escape_char: str | None):
    """Return the fields of one record as pyarrow reads them (a header, a rejected row)."""
    data = text.encode("utf-8") + b"\n"  # pyarrow sees no row in text without a line end
    if not data.strip(b"\r\n"):
        return []
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(block_size=min(len(data) + 64, _MAX_PARSE_BLOCK)),
            parse_options=_parse_options(delimiter, quote_char, None, escape_char),
        )
    except pa.ArrowInvalid:
        return []
    return [name.strip() for name in table.column_names]


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
    quoted_nulls: bool = False,
    infer_bytes: int,
    block_size: int,
    max_record: int = 64 << 20,
) -> ParseSettings:
    """Fix column names and types from the declared ones and a sample of the first file."""
    syntax = _syntax(delimiter, quote_char, escape_char)
    raw = _read_sample(path, infer_bytes, encoding)  # UTF-8 already when transcoded
    whole = raw
    if is_ascii_compatible(encoding):
        whole = raw.decode(encoding, errors="replace").encode("utf-8")
    view = masked(whole, syntax)
    cut = last_record_end(view, syntax, final=len(raw) < infer_bytes)
    if len(raw) >= infer_bytes and cut > 0:  # a cut sample: keep its whole records only
        whole, view = whole[:cut], view[:cut]
    records = scan_records(view, 1, syntax).nonempty()
    file_header = None
    if header:
        if not len(records):
            raise ConnectorError(f"`{path}` is empty: it has no header line to name the columns")
        first = whole[records.starts[0] : records.ends[0]].decode("utf-8")
        file_header = split_fields(first, delimiter, quote_char, escape_char)
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
    settings = ParseSettings(
        names=names,
        file_header=file_header,
        types={},
        delimiter=delimiter,
        quote_char=quote_char,
        escape_char=escape_char,
        encoding=encoding,
        null_values=null_values,
        quoted_nulls=quoted_nulls,
        block_size=block_size,
        max_record=max_record,
    )
    types = _infer_types(whole, declared, settings)
    return replace(settings, types=types)


def _read_sample_table(sample: bytes, settings: ParseSettings, types: dict) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(sample),
        read_options=pacsv.ReadOptions(
            column_names=settings.names, block_size=min(len(sample) + 64, _MAX_PARSE_BLOCK)
        ),
        parse_options=_parse_options(
            settings.delimiter, settings.quote_char, lambda row: "skip", settings.escape_char
        ),
        convert_options=_convert_options(settings, types),
    )


def _infer_types(
    sample: bytes, declared: dict[str, pa.DataType], settings: ParseSettings
) -> dict[str, pa.DataType]:
    inferred: dict[str, pa.DataType] = {}
    names = settings.names
    if sample.strip() and len(declared) < len(names):
        as_text = {name: pa.string() for name in declared}
        try:
            table = _read_sample_table(sample, settings, as_text)
            inferred = {field.name: field.type for field in table.schema}
            doubles = [n for n in names if n not in declared and inferred[n] == pa.float64()]
            if doubles:
                texts = _read_sample_table(sample, settings, {n: pa.string() for n in doubles})
                for name in doubles:
                    inferred[name] = exact_number_type(texts.column(name)) or pa.float64()
        except pa.ArrowInvalid as exc:
            _LOG.warning("Type inference failed (%s); undeclared columns are read as text", exc)
    types = {}
    for name in names:
        data_type = declared.get(name) or inferred.get(name, pa.string())
        if name not in declared and pa.types.is_timestamp(data_type):
            data_type = pa.timestamp("us", data_type.tz)  # one rule: see `INFERRED_TIMESTAMP`
        types[name] = pa.string() if pa.types.is_null(data_type) else data_type
    return types


#: Inferred timestamps are microseconds: `timestamp[us]` for values without an offset (no
#: zone is assumed), `timestamp[us, tz=UTC]` for values with one (converted to UTC). pyarrow
#: alone would infer seconds or nanoseconds depending on the sample.
INFERRED_TIMESTAMP = "us"


def exact_number_type(texts: pa.ChunkedArray) -> pa.DataType | None:
    """Return decimal128 or string for sampled numbers that float64 would round: integers
    beyond int64. None when float64 loses nothing an integer type would keep.

    All integers: `decimal128(38, 0)`; plain decimals (no exponent): `decimal128(38, s)` with
    the largest scale seen; if that cannot hold every value, or other notations are mixed in,
    `string`. Vectorized (pyarrow.compute over the sample).
    """
    values = pc.utf8_trim_whitespace(texts.drop_null())
    integers = pc.match_substring_regex(values, r"^[+-]?[0-9]+$")
    big = pc.filter(values, integers)
    digits = pc.utf8_length(pc.utf8_ltrim(pc.utf8_ltrim(big, "+-"), "0"))
    if not len(big) or pc.max(digits).as_py() < 19:
        return None
    try:
        pc.cast(big, pa.int64())
        return None  # every integer fits int64: nothing is rounded beyond what float64 does
    except (pa.ArrowInvalid, OverflowError):
        pass
    if pc.all(integers).as_py():
        return pa.decimal128(38, 0) if pc.max(digits).as_py() <= 38 else pa.string()
    if not pc.all(pc.match_substring_regex(values, _PLAIN_DECIMAL)).as_py():
        return pa.string()
    parts = pc.split_pattern(pc.utf8_ltrim(values, "+-0"), ".")
    whole_digits = pc.max(pc.utf8_length(pc.list_element(parts, 0))).as_py()
    fractions = pc.list_slice(parts, 1, 2)
    scale = pc.max(pc.utf8_length(pc.list_flatten(fractions))).as_py() or 0
    return pa.decimal128(38, scale) if whole_digits + scale <= 38 else pa.string()


def _parse_options(
    delimiter: str, quote_char: str | None, handler, escape_char: str | None = None
) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char=quote_char or False,
        escape_char=escape_char or False,
        double_quote=True,
        newlines_in_values=quote_char is not None or escape_char is not None,
        invalid_row_handler=handler,
    )


def _convert_options(
    settings: ParseSettings, types: dict, *, check_utf8: bool = True
) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types=types,
        null_values=settings.null_values,
        strings_can_be_null=True,
        quoted_strings_can_be_null=settings.quoted_nulls,
        check_utf8=check_utf8,
    )


def _is_utf8(block: Block) -> bool:
    """Whether `block` is valid UTF-8 (checked up front, about 2 ms for 16 MiB: pyarrow only
    checks text columns, and fails a whole parse on a short row with invalid bytes)."""
    if block.isascii():
        return True
    try:
        block.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class _InvalidUtf8(Exception):
    """pyarrow met bytes that are not UTF-8: the block must be checked record by record."""


def _raise_unless_conversion_error(exc: pa.ArrowInvalid, path: str) -> None:
    text = str(exc).lower()
    # A row with the wrong number of fields and invalid UTF-8 fails pyarrow's handler of
    # invalid rows (it decodes the row's text), which then fails the parse: same remedy.
    if "utf8" in text or "utf-8" in text or "csv parse error: expected" in text:
        raise _InvalidUtf8() from exc
    if "conversion error" not in text and "rescaling decimal" not in text:
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
        self._syntax = settings.syntax
        self.records = 0

    def read(self, stream: Readable, length: int | None) -> Iterator:
        """Yield `(batch, lines)` pairs and `DeadLetter`s for the range."""
        if self._is_first:
            start = stream.read(HEAD_BYTES if length is None else min(HEAD_BYTES, length))
            stream = open_text(Prefixed(start, stream), self._path, self._s.encoding)
            if length is not None:  # UTF-16/32 files are never split: length is None
                length -= len(_BOM) if start.startswith(_BOM) else 0
        header_pending = self._is_first and self._s.file_header is not None
        blocks = iter_record_blocks(
            stream, length, self._s.block_size, self._syntax, self._line, self._s.max_record
        )
        for item in blocks:
            if isinstance(item, Oversized):
                if header_pending:
                    raise ConnectorError(
                        f"The header of `{self._path}` is longer than `max_record_mb`"
                    )
                self.records += 1
                yield self._oversized(item)
                continue
            block, records = item
            records = records.nonempty()
            if header_pending and len(records):
                block, records = self._skip_header(block, records)
                header_pending = False
            if len(records):
                yield from self._parse_block(block, records)

    def _oversized(self, item: Oversized) -> DeadLetter:
        limit = self._s.max_record / (1 << 20)
        message = (
            f"Record of {item.size / (1 << 20):.1f} MiB is longer than the limit of {limit:g} MiB "
            "(`max_record_mb`; an unclosed quote makes one record of the rest of the file)"
        )
        return self._letter(MALFORMED_CSV, message, item.line, self._head(item.head, item.size))

    def _head(self, raw: Block, size: int) -> str:
        """The payload of a record too long to keep whole in a dead letter: its first KiB."""
        text = raw[:1024].decode(self._text_encoding, errors="backslashreplace")
        return text + "..." if size > 1024 else text

    def _set_aside(self, block: Block, records: Records) -> tuple[Block, Records, list]:
        """Take out, as dead letters, the records that are not parsed: a quoted field never
        closed at the end of the file, and records longer than `max_record`."""
        if records.plain is not None and len(block) <= self._s.max_record:
            return block, records, []  # none is open, none is longer than the block
        sizes = records.ends - records.starts
        keep = sizes <= self._s.max_record
        keep[-1:] &= not records.open_quote
        if keep.all():
            return block, records, []
        letters = []
        for index in np.flatnonzero(~keep):
            start, end, line = (
                int(v[index]) for v in (records.starts, records.ends, records.lines)
            )
            if records.open_quote and index == len(records) - 1:
                message = f"Quoted field never closed: the record from line {line} runs to the end"
                letters.append(
                    self._letter(
                        MALFORMED_CSV, message, line, self._head(block[start:], len(block) - start)
                    )
                )
            else:
                head = bytes(block[start : start + 1024])
                letters.append(self._oversized(Oversized(line, end - start, head)))
        kept = [block[s:e] for s, e in zip(records.starts[keep], records.ends[keep])]
        ends = np.cumsum(sizes[keep] + 1) - 1
        rebuilt = Records(ends - sizes[keep], ends, records.lines[keep], records.next_line)
        return b"\n".join(kept) + b"\n" if kept else b"", rebuilt, letters

    @property
    def _text_encoding(self) -> str:
        return "utf-8" if self._s.transcode else self._s.encoding

    def _skip_header(self, block: Block, records: Records) -> tuple[Block, Records]:
        raw = block[records.starts[0] : records.ends[0]]
        text = raw.decode(self._text_encoding, "replace")
        found = split_fields(text, self._s.delimiter, self._s.quote_char, self._s.escape_char)
        if found != self._s.file_header:
            raise ConnectorError(
                f"Header of `{self._path}` ({', '.join(found)}) differs from the first file's "
                f"({', '.join(self._s.file_header or [])})"
            )
        if len(records) == 1:
            return b"", records.after(1)
        return block[records.starts[1] :], records.after(1)

    def _decode(self, block: Block, records: Records) -> tuple[Block, np.ndarray, list]:
        """Return the block as UTF-8 without NUL bytes, the lines of its records, and dead
        letters for records with bytes invalid in the encoding or NUL bytes."""
        if b"\x00" not in block:
            try:
                text = block.decode(self._text_encoding)
                return (block if self._s.is_utf8 else text.encode("utf-8")), records.lines, []
            except UnicodeDecodeError:
                pass  # rare: find the bad records one by one below
        good, lines, letters = [], [], []
        for start, end, record_line in zip(records.starts, records.ends, records.lines):
            raw = block[start:end]
            try:
                text = raw.decode(self._text_encoding)
                if "\x00" in text:
                    message = f"NUL byte (0x00) at byte {raw.index(0)}: text cannot hold it"
                    letters.append(self._bad_bytes(message, int(record_line), raw))
                    continue
                good.append(text.encode("utf-8"))
                lines.append(int(record_line))
            except UnicodeDecodeError as exc:
                message = f"Bytes invalid in encoding `{self._text_encoding}` at byte {exc.start}"
                letters.append(self._bad_bytes(message, int(record_line), raw))
        return b"\n".join(good) + b"\n" if good else b"", np.array(lines, np.int64), letters

    def _bad_bytes(self, message: str, line: int, raw: Block) -> DeadLetter:
        payload = raw.decode(self._text_encoding, errors="backslashreplace")
        payload = payload.replace("\x00", "\\x00")
        return self._letter(INVALID_ENCODING, message, line, payload)

    def _letter(self, reason: str, message: str, line: int | None, payload) -> DeadLetter:
        return DeadLetter(self._step, reason, message, self._path, line, None, payload)

    def _parse_block(self, block: Block, records: Records) -> Iterator:
        block, records, letters = self._set_aside(block, records)
        if not len(records):
            self.records += len(letters)
            yield from letters
            return
        longest = records.longest()
        lines = records.lines
        if not self._s.is_utf8 or b"\x00" in block or not _is_utf8(block):
            block, lines, more = self._decode(block, records)
            letters += more
            longest *= 4  # transcoding to UTF-8 makes a record at most 4 times longer
        invalid: list[str] = []
        try:
            table, failures = self._convert(block, invalid, longest) if block else (None, [])
        except _InvalidUtf8:  # rare: find and reject the records with invalid bytes
            block, lines, more = self._decode(block, records)
            letters += more
            invalid.clear()
            try:
                table, failures = self._convert(block, invalid, longest) if block else (None, [])
            except _InvalidUtf8 as exc:
                raise ConnectorError(
                    f"`{self._path}` holds bytes that are not UTF-8 near line {records.lines[0]}"
                ) from exc
        self.records += len(letters)
        yield from letters
        if table is None:
            return
        yield from self._rows(block, table, failures, invalid, lines, int(records.lines[0]))

    def _rows(
        self, block: Block, table, failures, invalid: list[str], lines, first_line: int
    ) -> Iterator:
        parsed = table.num_rows + len(invalid)
        self.records += parsed
        known: list[int] = []
        if invalid:
            bad_records = self._locate(block, invalid)
            for text, index in zip(invalid, bad_records):
                at = int(lines[index]) if index is not None and index < len(lines) else None
                fields = len(split_fields(text, *self._dialect))
                message = f"Expected {len(self._s.names)} fields, found {fields}"
                yield self._letter(MALFORMED_CSV, message, at, text)
            known = [i for i in bad_records if i is not None]
        lines_ok: np.ndarray | None = np.delete(lines, known) if known else lines
        if parsed != len(lines) or len(known) < len(invalid):
            _LOG.warning("Line numbers unknown in `%s` near line %d", self._path, first_line)
            lines_ok = None
        yield from self._emit(table, failures, lines_ok)

    @property
    def _dialect(self) -> tuple[str, str | None, str | None]:
        return self._s.delimiter, self._s.quote_char, self._s.escape_char

    def _locate(self, block: Block, texts: list[str]) -> list[int | None]:
        """Return the record index of each invalid row's text (None if not found)."""
        records = scan_records(masked(block, self._syntax), 1, self._syntax).nonempty()
        starts, ends = records.starts, records.ends
        used: set[int] = set()
        found: list[int | None] = []
        for text in texts:
            needle, position, index = text.encode("utf-8"), 0, None
            while (position := block.find(needle, position)) >= 0:
                candidate = int(np.searchsorted(starts, position))
                is_record = (
                    candidate < len(starts)
                    and starts[candidate] == position
                    and ends[candidate] == position + len(needle)
                )
                if is_record and candidate not in used:
                    index = candidate
                    used.add(index)
                    break
                position += 1
            found.append(index)
        return found

    def _convert(self, block: Block, invalid: list[str], longest: int):
        def collect(row) -> str:
            invalid.append(row.text)
            return "skip"

        # pyarrow parses in blocks that must each hold a whole record: grow them for long ones
        parse_block = min(max(_PARSE_BLOCK, longest + 64), _MAX_PARSE_BLOCK)

        def parse(types: dict[str, pa.DataType]) -> pa.Table:
            return pacsv.read_csv(
                pa.BufferReader(block),  # no copy, no Python file calls
                read_options=pacsv.ReadOptions(column_names=self._s.names, block_size=parse_block),
                parse_options=_parse_options(
                    self._s.delimiter, self._s.quote_char, collect, self._s.escape_char
                ),
                # The block is valid UTF-8 (`_parse_block` checked or transcoded it whole):
                # pyarrow need not check every text value again (~0.1 CPU s for 3M rows).
                convert_options=_convert_options(self._s, types, check_utf8=False),
            )

        # Decimals are read as text and cast by casting.py, which checks their precision.
        late = {name: t for name, t in self._s.types.items() if reads_as_text(t)}
        try:
            table = parse({**self._s.types, **dict.fromkeys(late, pa.string())})
        except pa.ArrowInvalid as exc:
            _raise_unless_conversion_error(exc, self._path)
        else:
            if not late or not table.num_rows:
                return (table.cast(self._s.schema) if late else table), []
            batch = table.combine_chunks().to_batches()[0]
            typed, failures = cast_batch(batch, late)
            return typed, [(failure, batch) for failure in failures]
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
