"""Pure, vectorized scanning of CSV bytes: record boundaries, line numbers, split points.

Quoting is RFC 4180 style (a quote inside a quoted field is doubled), so a newline ends a
record exactly when the number of quote characters before it in the record is even. Counting
quotes with numpy finds every record boundary without a Python loop over rows, and lets a
large file be split at byte offsets that are certainly record boundaries, even when quoted
fields contain newlines.
"""

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

import numpy as np

NEWLINE = 10
CARRIAGE_RETURN = 13


class Records(NamedTuple):
    """The records of a block of whole records.

    starts/ends: byte offsets of each record (end excludes the newline and any `\\r`).
    lines: the 1-based line where each record starts.
    """

    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray

    def nonempty(self) -> "Records":
        """Return only the records with content (a CSV reader skips empty lines)."""
        keep = self.ends > self.starts
        return Records(self.starts[keep], self.ends[keep], self.lines[keep])

    def __len__(self) -> int:
        return len(self.starts)


def _record_newlines(data: np.ndarray, quote: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Return (positions of newlines that end records, their index among all newlines)."""
    newlines = np.flatnonzero(data == NEWLINE)
    if quote is None:
        return newlines, np.arange(len(newlines))
    quotes = np.flatnonzero(data == quote)
    even = (np.searchsorted(quotes, newlines) & 1) == 0
    return newlines[even], np.flatnonzero(even)


def scan_records(block: bytes, first_line: int, quote: int | None) -> Records:
    """Return every record of `block` (which starts at a record boundary)."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends, newline_index = _record_newlines(data, quote)
    starts = np.concatenate(([0], ends + 1)).astype(np.int64)
    lines = np.concatenate(([first_line], first_line + newline_index + 1)).astype(np.int64)
    record_ends = np.concatenate((ends, [len(block)])).astype(np.int64)
    if len(starts) and starts[-1] >= len(block):  # the block ends with a newline
        starts, lines, record_ends = starts[:-1], lines[:-1], record_ends[:-1]
    has_cr = (record_ends > starts) & (data[np.maximum(record_ends - 1, 0)] == CARRIAGE_RETURN)
    record_ends = record_ends - has_cr
    return Records(starts, record_ends, lines)


def last_record_end(block: bytes, quote: int | None) -> int:
    """Return the offset just past the last record-ending newline of `block`, or -1.

    Walks back from the end over newlines, counting quotes with `bytes.count` (C speed), so
    the usual case touches only the last few lines of the block.
    """
    if quote is None:
        position = block.rfind(b"\n")
        return position + 1 if position >= 0 else -1
    mark = bytes([quote])
    total = block.count(mark)
    end, after = len(block), 0
    for _ in range(256):
        position = block.rfind(b"\n", 0, end)
        if position < 0:
            return -1
        after += block.count(mark, position, end)
        if (total - after) % 2 == 0:
            return position + 1
        end = position
    data = np.frombuffer(block, dtype=np.uint8)  # a very long quoted field: scan it all
    ends, _ = _record_newlines(data, quote)
    return int(ends[-1]) + 1 if len(ends) else -1


def masked(block: bytes, quote: int | None, escape: int | None) -> bytes:
    """Return `block` with escaped quotes and escaped escapes blanked, for counting quotes.

    With an escape character (`\\"` inside a quoted field) quote parity only holds once the
    escaped pairs are taken out; they are replaced by two neutral bytes so that every offset
    stays the same.
    """
    if escape is None or quote is None:
        return block
    pair = bytes([escape])
    return block.replace(pair + pair, b"__").replace(pair + bytes([quote]), b"__")


def iter_record_blocks(
    stream: BinaryIO,
    limit: int | None,
    block_size: int,
    quote: int | None,
    escape: int | None = None,
) -> Iterator[bytes]:
    """Yield blocks of whole records read from `stream`, at most `limit` bytes in all.

    The stream must be positioned at a record boundary. The last block may end without a
    newline (the last record of a file) or inside a quote (an unterminated quoted field).
    """
    pending = b""
    remaining = limit
    while True:
        size = block_size if remaining is None else min(block_size, remaining)
        chunk = stream.read(size) if size > 0 else b""
        if remaining is not None:
            remaining -= len(chunk)
        if not chunk:
            if pending:
                yield pending
            return
        buffer = pending + chunk if pending else chunk
        cut = last_record_end(masked(buffer, quote, escape), quote)
        if cut <= 0:
            pending = buffer  # one record longer than a block: keep reading
            continue
        yield buffer[:cut]
        pending = buffer[cut:]


def split_points(
    stream: BinaryIO, size: int, split_size: int, quote: int | None, read_size: int = 1 << 24
) -> list[tuple[int, int]]:
    """Return `(offset, line)` of record boundaries about every `split_size` bytes.

    The first is always `(0, 1)`. One sequential pass counts quotes and newlines per chunk
    (C speed); numpy looks at positions only in the chunks where a split falls.
    """
    points = [(0, 1)]
    target = split_size
    position = 0
    parity = 0
    lines = 0
    while target < size:
        chunk = stream.read(read_size)
        if not chunk:
            break
        end = position + len(chunk)
        while target < end:
            found = _boundary_after(chunk, target - position, parity, quote)
            if found < 0:
                target = end  # no boundary in the rest of this chunk: look in the next one
                break
            offset = position + found
            if offset < size:
                points.append((offset, 1 + lines + chunk.count(b"\n", 0, found)))
            target = offset + split_size
        parity = (parity + (chunk.count(bytes([quote])) if quote is not None else 0)) & 1
        lines += chunk.count(b"\n")
        position = end
    return points


def _boundary_after(chunk: bytes, start: int, parity: int, quote: int | None) -> int:
    data = np.frombuffer(chunk, dtype=np.uint8)
    newlines = np.flatnonzero(data == NEWLINE)
    newlines = newlines[newlines >= max(start - 1, 0)]
    if quote is not None:
        quotes = np.flatnonzero(data == quote)
        newlines = newlines[((parity + np.searchsorted(quotes, newlines)) & 1) == 0]
    return int(newlines[0]) + 1 if len(newlines) else -1
