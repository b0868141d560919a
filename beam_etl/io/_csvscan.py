"""Pure, vectorized scanning of CSV bytes: record boundaries, line numbers, split points.

The scanner follows the state machine of pyarrow's CSV parser exactly, so that the records it
finds are the rows pyarrow parses: a quote opens a quoted field only at the start of a field
(after a delimiter, a line end, or at the start of the data); inside one, a doubled quote is a
quote and a single quote closes it; any later quote in the same field is a plain character
(`12" pizza`, `"a"b"c`). Lines end with `\\n`, `\\r\\n` or a lone `\\r`. With an escape
character, the escaped byte is always a plain character.

Counting quotes with numpy finds every record boundary without a Python loop over rows. When
every quote that opens a quoted field under the simple parity rule (a newline ends a record
when the number of quotes before it is even) sits at the start of a field, that rule is exact
and costs one pass; otherwise (stray quotes) the state after each quote is found by composing
small transition tables in a prefix scan (`O(q log q)` for `q` quotes, still vectorized).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple, Protocol

import numpy as np

from beam_etl.io._compressed import read_into

NEWLINE = 10
CARRIAGE_RETURN = 13

# Quote states after a byte: outside a quoted field, inside one, or just after a quote that
# closed one (a quote right after it makes a doubled quote and reopens).
OUT, IN, CLOSED = 0, 1, 2


def _code(after_out: int, after_in: int, after_closed: int) -> int:
    return after_out * 9 + after_in * 3 + after_closed


# The three transitions a quote can make (state before the gap of plain bytes before the quote
# -> state after the quote): right after another quote, at the start of a field, or anywhere
# else (a plain character unless inside a quoted field).
_ADJACENT = _code(OUT, CLOSED, IN)
_AT_FIELD_START = _code(IN, CLOSED, IN)
_PLAIN = _code(OUT, CLOSED, OUT)
_APPLY = np.array([[code // 9, code // 3 % 3, code % 3] for code in range(27)], np.uint8)
_COMPOSE = np.array(  # _COMPOSE[later, earlier]: the map of `earlier` then `later`
    [[_code(*_APPLY[later][_APPLY[earlier]]) for earlier in range(27)] for later in range(27)],
    np.uint8,
)


class Readable(Protocol):
    """What the readers need of a stream: `read(size)` (a file, a decompressing stream ...)."""

    def read(self, size: int = -1, /) -> bytes: ...


#: A block of CSV text: `bytes`, or a `bytearray` read into (`iter_record_blocks`).
Block = bytes | bytearray


class Syntax(NamedTuple):
    """The bytes that structure CSV text: delimiter, quote (or None), escape (or None)."""

    delimiter: int
    quote: int | None = ord('"')
    escape: int | None = None


class Carry(NamedTuple):
    """What scanning one chunk hands to the next: the quote state and the last byte."""

    state: int = OUT
    last: int = NEWLINE


_AT_BOUNDARY: Final = Carry()


@dataclass(frozen=True)
class Records:
    """The records of a block of whole records.

    starts/ends: byte offsets of each record (end excludes the line end).
    lines: the 1-based line where each record starts.
    next_line: the line just after the block.
    open_quote: the last record ends inside a quoted field that is never closed.
    plain: the block (then kept here) is a record a line, every line ending with one `\\n`,
        none empty; its record offsets are found only when asked for (`_plain_cut`).
    """

    _starts: np.ndarray | None
    _ends: np.ndarray | None
    lines: np.ndarray
    next_line: int
    open_quote: bool = False
    plain: Block | None = field(default=None, repr=False, compare=False)

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            self._bounds()
        return self._starts  # type: ignore[return-value]

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            self._bounds()
        return self._ends  # type: ignore[return-value]

    def _bounds(self) -> None:
        data = np.frombuffer(self.plain or b"", dtype=np.uint8)
        ends = np.flatnonzero(data == NEWLINE).astype(np.int64)
        starts = np.empty(len(ends), np.int64)
        starts[:1] = 0
        starts[1:] = ends[:-1] + 1
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_ends", ends)

    def longest(self) -> int:
        """The length of the longest record, or (a plain block) a bound of it within 2 MiB."""
        if not len(self):
            return 0
        if self.plain is not None and self._starts is None:
            window, block = _WINDOW, self.plain
            if all(block.find(b"\n", at, at + window) >= 0 for at in range(0, len(block), window)):
                return min(2 * window, len(block))  # a line end in every window
        return int((self.ends - self.starts).max())

    def nonempty(self) -> "Records":
        """Return only the records with content (a CSV reader skips empty lines)."""
        if self.plain is not None:
            return self
        keep = self.ends > self.starts
        if keep.all():
            return self
        return replace(
            self, _starts=self.starts[keep], _ends=self.ends[keep], lines=self.lines[keep]
        )

    def after(self, index: int) -> "Records":
        """Return the records from `index` on, with offsets counted from its start."""
        offset = self.starts[index] if index < len(self.starts) else 0
        return replace(
            self,
            _starts=self.starts[index:] - offset,
            _ends=self.ends[index:] - offset,
            lines=self.lines[index:],
            plain=None,
        )

    def __len__(self) -> int:
        return len(self.lines)


_WINDOW: Final = 1 << 20


class Scan(NamedTuple):
    """Line ends of a chunk: `ends` (offset of each line end's last byte), `closing` (True
    where the line end also ends a record), and the carry after the chunk; `returns`: the
    chunk holds a `\r` (False: every line end is a lone `\n`)."""

    ends: np.ndarray
    closing: np.ndarray
    carry: Carry
    returns: bool = True


def masked(block: Block, syntax: Syntax) -> Block:
    """Return `block` with every escape pair that matters blanked, for scanning.

    An escaped quote, delimiter, line end or escape is a plain character; the pairs are
    replaced by two neutral bytes so that every offset stays the same. Escapes pair from the
    left, as the parser reads them.
    """
    if syntax.escape is None:
        return block
    escape = bytes([syntax.escape])
    out = block.replace(escape + escape, b"__")
    specials = [syntax.delimiter, NEWLINE, CARRIAGE_RETURN]
    specials += [syntax.quote] if syntax.quote is not None else []
    for special in specials:
        out = out.replace(escape + bytes([special]), b"__")
    return out


def _line_ends(data: np.ndarray, carry: Carry, returns: bool) -> np.ndarray:
    """Offsets of the last byte of each line end: `\\n`, `\\r\\n` (its `\\n`) or a lone `\\r`.

    A `\\r` that is the last byte counts as a lone one; a `\\n` right after a `\\r` that ended
    the previous chunk does not count again. `returns`: `data` holds a `\\r`.
    """
    newlines = np.flatnonzero(data == NEWLINE)
    if carry.last == CARRIAGE_RETURN and len(newlines) and newlines[0] == 0:
        newlines = newlines[1:]
    if not returns:
        return newlines
    at = np.flatnonzero(data == CARRIAGE_RETURN)
    following = data[np.minimum(at + 1, len(data) - 1)]
    lone = at[(at + 1 >= len(data)) | (following != NEWLINE)]
    return np.union1d(newlines, lone) if len(lone) else newlines


def _states_after_quotes(
    data: np.ndarray, quotes: np.ndarray, syntax: Syntax, carry: Carry
) -> np.ndarray | None:
    """Return the quote state after each quote, or None when the parity rule holds (the state
    is then IN after every quote that opens and CLOSED after every quote that closes)."""
    previous = data[np.maximum(quotes - 1, 0)]
    if len(quotes) and quotes[0] == 0:
        previous[0] = carry.last
    adjacent = previous == syntax.quote
    field_start = (
        (previous == syntax.delimiter) | (previous == NEWLINE) | (previous == CARRIAGE_RETURN)
    )
    opening = 1 if carry.state == IN else 0
    may_open = field_start | adjacent
    if carry.state == OUT and len(quotes):
        may_open[0] = field_start[0]  # after a plain quote, an adjacent one does not reopen
    if may_open[opening::2].all():
        return None
    codes = np.where(adjacent, _ADJACENT, np.where(field_start, _AT_FIELD_START, _PLAIN))
    codes = codes.astype(np.uint8)
    step = 1
    while step < len(codes):  # Hillis-Steele prefix composition of the transitions
        codes[step:] = _COMPOSE[codes[step:], codes[:-step]]
        step *= 2
    return _APPLY[codes, carry.state]


def scan(chunk: Block, syntax: Syntax, carry: Carry = _AT_BOUNDARY) -> Scan:
    """Find the line ends of `chunk` (bytes already `masked`) and which of them end records.

    `carry` is the state at the start of the chunk (the default: at a record boundary).
    """
    data = np.frombuffer(chunk, dtype=np.uint8)
    if not len(data):
        return Scan(np.array([], np.int64), np.array([], bool), carry)
    returns = b"\r" in chunk  # memchr: far cheaper than a pass of numpy
    ends = _line_ends(data, carry, returns)
    last = int(data[-1])
    if syntax.quote is None:
        return Scan(ends, np.ones(len(ends), bool), Carry(OUT, last), returns)
    if bytes((syntax.quote,)) not in chunk:
        state = IN if carry.state == IN else OUT
        return Scan(ends, np.full(len(ends), state != IN), Carry(state, last), returns)
    quotes = np.flatnonzero(data == syntax.quote)
    before = _counts_before(quotes, ends)  # quotes before each line end
    states = _states_after_quotes(data, quotes, syntax, carry)
    if states is None:
        inside = ((before & 1) == 1) != (carry.state == IN)
    else:
        initial = np.uint8(carry.state)
        at_end = np.where(before > 0, states[np.maximum(before - 1, 0)], initial)
        inside = at_end == IN
    return Scan(ends, ~inside, Carry(_state_after(len(data), quotes, states, carry), last), returns)


def _state_after(size: int, quotes: np.ndarray, states: np.ndarray | None, carry: Carry) -> int:
    """The quote state at the end of a chunk of `size` bytes with `quotes` (at least one) and
    the states after them (None: the parity rule holds)."""
    if states is None:
        state = IN if (len(quotes) & 1 == 1) != (carry.state == IN) else CLOSED
    else:
        state = int(states[-1])
    return OUT if state == CLOSED and quotes[-1] != size - 1 else state


def _counts_before(marks: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each of the sorted offsets `ends`, how many of the sorted offsets `marks` (never
    equal to one of `ends`) come before it."""
    if len(marks) * 16 >= len(ends):
        return np.searchsorted(marks, ends)
    # Few marks among many line ends: place each mark, then count (no search a line end).
    placed = np.bincount(np.searchsorted(ends, marks), minlength=len(ends) + 1)
    return np.cumsum(placed[: len(ends)])


def _records(block: Block, first_line: int, found: Scan, stop: int) -> Records:
    """Return the records of `block[:stop]`, given the scan of `block`."""
    if not stop:
        empty = np.array([], np.int64)
        return Records(empty, empty, empty, first_line)
    ends = found.ends[: np.searchsorted(found.ends, stop)] if stop < len(block) else found.ends
    closing = found.closing[: len(ends)]
    every = bool(closing.all())  # no line end inside a quoted field: a record a line
    record_ends = (ends if every else ends[closing]).astype(np.int64)
    starts = np.empty(len(record_ends) + 1, np.int64)
    starts[0] = 0
    starts[1:] = record_ends + 1
    if every:
        lines = np.arange(first_line, first_line + len(record_ends) + 1, dtype=np.int64)
    else:
        lines = np.concatenate(([first_line], first_line + np.flatnonzero(closing) + 1))
    if starts[-1] >= stop:  # the block ends with a line end
        starts, lines = starts[:-1], lines[:-1]
    else:
        record_ends = np.concatenate((record_ends, [stop])).astype(np.int64)
    if not found.returns:  # every line end is one `\n`: a record ends at it
        return Records(starts, record_ends, lines.astype(np.int64), first_line + len(ends))
    # A record ends before its line end: at the `\n` or lone `\r`, or before a `\r\n`.
    data = np.frombuffer(block, dtype=np.uint8)
    at = np.minimum(record_ends, len(data) - 1)
    crlf = (
        (record_ends > starts)
        & (record_ends < stop)
        & (data[at] == NEWLINE)
        & (data[np.maximum(at - 1, 0)] == CARRIAGE_RETURN)
    )
    return Records(starts, record_ends - crlf, lines.astype(np.int64), first_line + len(ends))


def scan_records(block: Block, first_line: int, syntax: Syntax) -> Records:
    """Return every record of `block` (masked, starting at a record boundary, complete)."""
    found = scan(block, syntax)
    records = _records(block, first_line, found, len(block))
    return replace(records, open_quote=found.carry.state == IN)


def _quoted_line_end(view: Block, newlines: np.ndarray, quotes: np.ndarray) -> bool:
    """Whether a line end falls between an opening quote and its closing one (`quotes`: the
    offsets of an even number of quotes that open and close in turn)."""
    if len(quotes) * 256 < len(view):  # few quoted fields: a memchr each
        find = view.find
        pairs = quotes.tolist()
        return any(find(b"\n", pairs[i], pairs[i + 1]) >= 0 for i in range(0, len(pairs), 2))
    if not len(quotes):
        return False
    first = int(quotes[0])
    spans = np.logical_or.reduceat(newlines[first : int(quotes[-1])], quotes[:-1] - first)
    return bool(spans[::2].any())


def _plain(block: Block, first_line: int, count: int) -> Records:
    """The records of a block of `count` records, a record a line (`_plain_cut`)."""
    lines = np.arange(first_line, first_line + count, dtype=np.int64)
    return Records(None, None, lines, first_line + count, plain=block)


def _plain_cut(view: Block, syntax: Syntax) -> tuple[int, int] | None:
    """The common case at about a third of `scan`'s cost: when `view` (at a record boundary)
    holds no `\\r`, no empty line, no escape, and no line end inside a quoted field, return the
    offset just past its last record end and the number of records before it (a record a
    line: `_plain`); None otherwise, and the full scan decides."""
    if syntax.escape is not None or b"\r" in view or view.startswith(b"\n"):
        return None
    data = np.frombuffer(view, dtype=np.uint8)
    newlines = data == NEWLINE
    limit = len(view)
    if syntax.quote is not None and bytes((syntax.quote,)) in view:
        quotes = np.flatnonzero(data == syntax.quote)
        if _states_after_quotes(data, quotes, syntax, _AT_BOUNDARY) is not None:
            return None  # a quote inside a field: the states need the full scan
        if len(quotes) & 1:  # the last quoted field is still open: no record ends after it
            limit = int(quotes[-1])
            quotes = quotes[:-1]
        if _quoted_line_end(view, newlines, quotes):
            return None
    cut = view.rfind(b"\n", 0, limit) + 1
    if cut <= 0 or (newlines[1:cut] & newlines[: cut - 1]).any():  # an empty line
        return None
    return cut, int(np.count_nonzero(newlines[:cut]))


def last_record_end(block: Block, syntax: Syntax, final: bool = False) -> int:
    """Return the offset just past the last record-ending line end of `block` (masked), or -1.

    Unless `final`, a `\\r` that is the last byte is no boundary: its `\\n` may follow.
    """
    return _cut(block, scan(block, syntax), final)


def _cut(block: Block, found: Scan, final: bool) -> int:
    closing = found.ends[found.closing]
    at_end = len(closing) and closing[-1] == len(block) - 1
    if at_end and not final and block[-1] == CARRIAGE_RETURN:  # its `\n` may come next
        closing = closing[:-1]
    return int(closing[-1]) + 1 if len(closing) else -1


class Oversized(NamedTuple):
    """A record longer than the limit, skipped: its first line, size in bytes (with its line
    end) and first bytes."""

    line: int
    size: int
    head: bytes


def iter_record_blocks(
    stream: Readable,
    limit: int | None,
    block_size: int,
    syntax: Syntax,
    first_line: int = 1,
    max_record: int = 1 << 62,
) -> Iterator[tuple[Block, Records] | Oversized]:
    """Yield `(block, records)` of whole records read from `stream`, at most `limit` bytes
    (a block is a `bytearray` or `bytes`: never changed once yielded).

    The stream must be positioned at a record boundary. A record longer than `max_record`
    bytes is skipped (read on to its end without holding it) and yielded as `Oversized`.
    The last block may end without a line end (the last record of a file) or inside a quote
    (an unterminated quoted field: `records.open_quote`).
    """
    reader = _Limited(stream, limit)
    pending: Block = b""
    line = first_line
    while True:
        # A record longer than a block is rescanned whole on each read: read as much again
        # as is pending, so that a long record costs a few passes, not one per block.
        buffer = reader.read_after(pending, max(block_size, len(pending)))
        if len(buffer) == len(pending):  # nothing more
            if pending:
                view = masked(pending, syntax)
                records = scan_records(view, line, syntax)
                yield pending, _escaped_lines(pending, view, len(pending), records)
            return
        quick = _plain_cut(buffer, syntax) if len(buffer) <= max_record else None
        if quick is not None:
            cut, count = quick
            pending = bytes(buffer[cut:])  # the start of the next record: a part of a line
            del buffer[cut:]  # the block itself, not copied
            yield buffer, _plain(buffer, line, count)
            line += count
            continue
        view = masked(buffer, syntax)
        found = scan(view, syntax)
        cut = _cut(view, found, final=False)
        if cut <= 0:
            if len(buffer) > max_record:
                skipped = yield from _skip(reader, buffer, view, found, line, block_size, syntax)
                pending, line = skipped
            else:
                pending = buffer  # one record longer than a block: keep reading
            continue
        records = _escaped_lines(buffer, view, cut, _records(view, line, found, cut))
        yield buffer[:cut], records
        pending, line = buffer[cut:], records.next_line


def _skip(
    reader, buffer: Block, view: Block, found: Scan, line: int, block_size: int, syntax: Syntax
):
    """Read past the record that fills `buffer` (no record end in it; `view`: it `masked`,
    `found`: its scan); yield it `Oversized`.

    Returns what follows it and the line where that starts.
    """
    head, size, carry, lines = bytes(buffer[:1024]), len(buffer), found.carry, len(found.ends)
    lines += len(_escaped_ends(buffer, view, len(buffer)))
    if found.closing.any():  # its only record end is the `\r` that ends `buffer` (see _cut)
        after = reader.read(1)
        yield Oversized(line, size + (after == b"\n"), head)
        return (b"" if after == b"\n" else after), line + lines
    escaped = _ends_escaping(buffer, syntax)
    while True:
        chunk = reader.read(block_size)
        if not chunk:
            yield Oversized(line, size, head)
            return b"", line + lines
        # An escape that ended the last read makes this read's first byte plain.
        rest = chunk[1:] if escaped else chunk
        view = b"_" + masked(rest, syntax) if escaped else masked(chunk, syntax)
        escaped = _ends_escaping(rest, syntax)
        part = scan(view, syntax, carry)
        closing = part.ends[part.closing]
        if len(closing):
            end = int(closing[0]) + 1
            if view[end - 1] == CARRIAGE_RETURN and end == len(view):
                chunk += reader.read(1)  # the `\n` of a `\r\n` split between reads
                end += chunk[end : end + 1] == b"\n"
            yield Oversized(line, size + end, head)
            lines += len(_escaped_ends(chunk, view, int(closing[0])))
            return chunk[end:], line + lines + int(np.count_nonzero(part.ends < closing[0])) + 1
        lines += len(part.ends) + len(_escaped_ends(chunk, view, len(chunk)))
        size, carry = size + len(chunk), part.carry


def _escaped_ends(raw: Block, view: Block, stop: int) -> np.ndarray:
    """Offsets of the line ends in `raw[:stop]` that an escape made plain (`view`: `raw`
    masked): a record goes on past them, but they are lines all the same."""
    if view is raw or stop <= 0:
        return np.array([], np.int64)
    data = np.frombuffer(raw, dtype=np.uint8)
    ends = _line_ends(data, _AT_BOUNDARY, b"\r" in raw)  # the line ends of the text itself
    ends = ends[: np.searchsorted(ends, stop)]
    return ends[data[ends] != np.frombuffer(view, dtype=np.uint8)[ends]]


def _escaped_lines(raw: Block, view: Block, stop: int, records: Records) -> Records:
    """`records` of `raw[:stop]` numbered by physical lines: an escaped line end inside a
    record moves the lines of the records after it on."""
    escaped = _escaped_ends(raw, view, stop)
    if not len(escaped):
        return records
    lines = records.lines + np.searchsorted(escaped, records.starts)
    return replace(records, lines=lines, next_line=records.next_line + len(escaped))


def _ends_escaping(data: Block, syntax: Syntax) -> bool:
    """Whether `data` ends with an escape that pairs with the byte after it (escapes pair
    from the left: an odd run of them at the end leaves the last one open)."""
    if syntax.escape is None or not data.endswith(bytes((syntax.escape,))):
        return False
    return (len(data) - len(data.rstrip(bytes((syntax.escape,))))) % 2 == 1


class _Limited:
    """Reads at most `limit` bytes (None: all) from a stream."""

    # A stream of unknown length is read in sizes growing from this one, so that a small file
    # (or a compressed one: its length is never known) costs no buffer of a whole block.
    _FIRST_UNKNOWN: Final = 64 << 10

    def __init__(self, stream: Readable, limit: int | None) -> None:
        self._stream = stream
        self._remaining = limit
        self._unknown = self._FIRST_UNKNOWN  # the next read's size while the length is unknown
        self._ended = False  # the stream said it has no more

    def read(self, size: int) -> bytes:
        if self._remaining is None:
            return self._stream.read(size)
        size = min(size, self._remaining)
        chunk = self._stream.read(size) if size > 0 else b""
        self._remaining -= len(chunk)
        return chunk

    def read_after(self, head: Block, size: int) -> bytearray:
        """Return `head` and then up to `size` bytes read in one new buffer, read into it: what
        is read is never copied again. Fewer bytes only at the end, at the limit, or while the
        stream's length is unknown (reads grow from 64 KiB to `size`, x4 each time)."""
        if self._ended:
            return bytearray(head)
        if self._remaining is not None:
            size = min(size, self._remaining)
        else:
            size, self._unknown = min(size, self._unknown), self._unknown * 4
        buffer = bytearray(len(head) + size)
        buffer[: len(head)] = head
        got = len(head)
        with memoryview(buffer) as view:
            while got < len(buffer):
                with view[got:] as free:
                    count = read_into(self._stream, free)
                if not count:
                    self._ended = True
                    break
                got += count
        if self._remaining is not None:
            self._remaining -= got - len(head)
        del buffer[got:]
        return buffer


def _pass_over(chunk: bytes, syntax: Syntax, carry: Carry) -> tuple[int, Carry] | None:
    """Return the number of line ends in `chunk` (masked) and the carry after it, as `scan`
    finds them but without placing the line ends, or None (a `\r` in it: ask `scan`)."""
    if b"\r" in chunk:
        return None
    count = chunk.count(b"\n") - (carry.last == CARRIAGE_RETURN and chunk[:1] == b"\n")
    last = chunk[-1]
    if syntax.quote is None:
        return count, Carry(OUT, last)
    if bytes((syntax.quote,)) not in chunk:
        return count, Carry(IN if carry.state == IN else OUT, last)
    data = np.frombuffer(chunk, dtype=np.uint8)
    quotes = np.flatnonzero(data == syntax.quote)
    states = _states_after_quotes(data, quotes, syntax, carry)
    return count, Carry(_state_after(len(data), quotes, states, carry), last)


def split_points(
    stream: Readable, size: int, split_size: int, syntax: Syntax, read_size: int = 1 << 24
) -> list[tuple[int, int]]:
    """Return `(offset, line)` of record boundaries about every `split_size` bytes.

    The first is always `(0, 1)`. One sequential pass scans each chunk (numpy, no Python loop
    over rows), carrying the quote state from chunk to chunk.
    """
    points = [(0, 1)]
    target, position, lines, carry = split_size, 0, 0, _AT_BOUNDARY
    while target < size:
        chunk = stream.read(read_size)
        if not chunk:
            break
        passed = _pass_over(chunk, syntax, carry) if position + len(chunk) <= target else None
        if passed is not None:  # no split point here: the line count and the state will do
            lines += passed[0]
            position, carry = position + len(chunk), passed[1]
            continue
        found = scan(chunk, syntax, carry)
        boundaries = found.ends[found.closing] + 1
        if chunk[-1] == CARRIAGE_RETURN and len(boundaries) and boundaries[-1] == len(chunk):
            boundaries = boundaries[:-1]  # its `\n` may start the next chunk
        line_of = np.searchsorted(found.ends, boundaries)  # line ends before each boundary
        end = position + len(chunk)
        while target < end:
            index = int(np.searchsorted(boundaries, target - position))
            if index >= len(boundaries):
                break  # no boundary in the rest of this chunk: look in the next one
            offset = position + int(boundaries[index])
            if offset < size:
                points.append((offset, 1 + lines + int(line_of[index])))
            target = offset + split_size
        lines += len(found.ends)
        position, carry = end, found.carry
    return points
