"""Record boundaries, line numbers and split points from raw CSV bytes, checked against
pyarrow's own parser on random text."""

import io
import random
import tracemalloc

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from beam_etl.io._compressed import Prefixed, read_into
from beam_etl.io._csvscan import (
    Oversized,
    Syntax,
    _plain,
    _plain_cut,
    iter_record_blocks,
    last_record_end,
    scan_records,
    split_points,
)

CSV = Syntax(ord(","), ord('"'))


def test_records_know_their_first_line_across_quoted_newlines():
    block = b'a,b\n1,"x\ny"\n\n2,z\r\n3,"q""\n"\n'
    records = scan_records(block, 10, CSV).nonempty()
    texts = [block[s:e] for s, e in zip(records.starts, records.ends)]
    assert texts == [b"a,b", b'1,"x\ny"', b"2,z", b'3,"q""\n"']
    assert records.lines.tolist() == [10, 11, 14, 15]


def test_last_record_without_newline_is_a_record():
    records = scan_records(b"a\nb", 1, CSV)
    assert records.lines.tolist() == [1, 2]


def test_blocks_hold_whole_records_only():
    data = b"".join(b'%d,"line\nbreak %d"\n' % (i, i) for i in range(500))
    blocks = [block for block, _ in iter_record_blocks(io.BytesIO(data), None, 97, CSV)]
    assert b"".join(blocks) == data
    for block in blocks:
        assert block.count(b'"') % 2 == 0


@pytest.mark.parametrize("split_size", [50, 333, 4096])
def test_split_points_are_record_boundaries(split_size):
    data = b"".join(b'%d,"a\nb,%d",x\n' % (i, i) for i in range(2000))
    points = split_points(io.BytesIO(data), len(data), split_size, CSV, read_size=1000)
    assert points[0] == (0, 1)
    assert len(points) > 3
    starts = {0} | {i + 1 for i in range(len(data)) if data[i : i + 1] == b"\n"}
    for offset, line in points:
        assert offset in starts
        assert data[:offset].count(b'"') % 2 == 0
        assert line == data[:offset].count(b"\n") + 1


# Pieces of CSV text that exercise every rule of pyarrow's parser: quoted fields with line ends
# and doubled quotes inside, stray quotes in unquoted fields, and all three line ends.
_PIECES = [b"a", b"bc", b'"', b'""', b'"x"', b'"y\nz"', b'"r\r\nq"', b",", b",", b",", b"\n"]
_PIECES += [b"\n", b"\r\n", b"\r", b" ", b'12" p', b'"a"b"', b'""""']


def _pyarrow_rows(data: bytes) -> tuple[int, list]:
    """(rows + invalid rows, rows) as pyarrow parses `data` into three text columns."""
    invalid = []

    def handler(row):
        invalid.append(row.text)
        return "skip"

    if not data.strip(b"\r\n"):
        return 0, []
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=["a", "b", "c"]),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys("abc", pa.string())),
    )
    return table.num_rows + len(invalid), table.to_pylist()


@pytest.mark.parametrize("seed", range(4))
def test_records_are_exactly_the_rows_pyarrow_parses(seed):
    """Parsing each record alone gives what parsing the whole text gives, row for row."""
    rng = random.Random(seed)
    for _ in range(250):
        data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 40)))
        records = scan_records(data, 1, CSV).nonempty()
        count, rows = 0, []
        for start, end in zip(records.starts, records.ends):
            last = start == records.starts[-1] and (records.open_quote or end == len(data))
            found = _pyarrow_rows(data[start:] if last else data[start:end] + b"\n")
            count, rows = count + found[0], rows + found[1]
        assert (count, rows) == _pyarrow_rows(data), data


@pytest.mark.parametrize("seed", range(3))
def test_blocks_and_split_points_agree_with_one_scan(seed):
    rng = random.Random(seed)
    for _ in range(300):
        data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 60)))
        whole = scan_records(data, 1, CSV)
        want = [(data[s:e], line) for s, e, line in zip(whole.starts, whole.ends, whole.lines)]
        got = []
        for block, records in iter_record_blocks(io.BytesIO(data), None, rng.randint(1, 9), CSV):
            got += [(block[s:e], n) for s, e, n in zip(records.starts, records.ends, records.lines)]
        assert [g for g in got if g[0]] == [w for w in want if w[0]], data
        starts = dict(zip(whole.starts.tolist(), whole.lines.tolist()))
        size, step = rng.randint(1, 8), rng.randint(1, 9)
        for offset, line in split_points(io.BytesIO(data), len(data), size, CSV, step)[1:]:
            assert starts.get(offset) == line, (data, offset, line)
        # Split points far apart: most reads hold none and are passed over without a scan.
        size, step = rng.randint(10, 60), rng.randint(1, 4)
        for offset, line in split_points(io.BytesIO(data), len(data), size, CSV, step)[1:]:
            assert starts.get(offset) == line, (data, offset, line)


class _Trickle:
    """A stream with only `read`, which gives a few bytes a call (as a decompressing one may)."""

    def __init__(self, data: bytes, most: int) -> None:
        self._data, self._most = data, most

    def read(self, size: int = -1) -> bytes:
        size = self._most if size < 0 else min(size, self._most)
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


def _blocks(stream, limit, block_size) -> list:
    return [
        (bytes(block), records.lines.tolist(), records.next_line, records.open_quote)
        for block, records in iter_record_blocks(stream, limit, block_size, CSV)
    ]


@pytest.mark.parametrize("seed", range(2))
def test_blocks_are_the_same_whatever_the_stream_gives_at_a_time(seed):
    """Blocks are read into one buffer (`readinto` where the stream has it, else `read`); a
    stream of a few bytes a call, one that starts with a head already read (`Prefixed`), or
    a byte limit change nothing."""
    rng = random.Random(seed)
    for _ in range(200):
        data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 60)))
        block_size, limit = rng.randint(1, 9), rng.choice([None, rng.randint(0, len(data))])
        want = _blocks(io.BytesIO(data), limit, block_size)
        assert _blocks(_Trickle(data, rng.randint(1, 5)), limit, block_size) == want, data
        head = rng.randint(0, len(data))
        prefixed = Prefixed(data[:head], io.BytesIO(data[head:]))
        assert _blocks(prefixed, limit, block_size) == want, data
        if limit is None:
            assert b"".join(block for block, *_ in want) == data


class _Counting(io.BytesIO):
    """A stream that counts the calls made to read it, and those made after it said "end"."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls = self.after_end = 0
        self._ended = False

    def readinto(self, buffer) -> int:
        self.calls += 1
        self.after_end += self._ended
        count = super().readinto(buffer)
        self._ended = count == 0
        return count


def test_a_small_stream_of_unknown_length_costs_no_whole_block():
    """A 64 MiB block size does not mean a 64 MiB buffer for 8 bytes, and the end is asked
    for once."""
    stream = _Counting(b"a,b\n1,2\n")
    tracemalloc.start()
    try:
        blocks = list(iter_record_blocks(stream, None, 64 << 20, CSV))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [bytes(block) for block, _ in blocks] == [b"a,b\n1,2\n"]
    assert peak < 1 << 20
    assert (stream.calls, stream.after_end) == (2, 0)


def test_reads_of_unknown_length_grow_to_the_block_size():
    data = b"x,y\n" * (1 << 20)  # 4 MiB
    sizes = [len(block) for block, _ in iter_record_blocks(io.BytesIO(data), None, 1 << 20, CSV)]
    assert sizes == [64 << 10, 256 << 10, 1 << 20, 1 << 20, 1 << 20, 704 << 10]


def test_reading_into_a_buffer_takes_none_as_the_end_and_refuses_more_than_asked():
    class Ended:
        def read(self, size):
            return None

    class Overflowing:
        def read(self, size):
            return b"x" * (size + 1)

    buffer = bytearray(b"....")
    assert read_into(Ended(), buffer) == 0
    with pytest.raises(ValueError, match="5 bytes when asked for 4"):
        read_into(Overflowing(), buffer)
    assert read_into(Prefixed(b"ab", io.BytesIO(b"cdef")), memoryview(buffer)[1:]) == 2
    assert buffer == b".ab."


def test_stray_quote_and_lone_carriage_return_end_where_pyarrow_ends_rows():
    data = b'id,t\r100,12" pizza\r\n2,"multi\nline"\r3,"a"b"c\n4,x'
    records = scan_records(data, 1, CSV)
    texts = [data[s:e] for s, e in zip(records.starts, records.ends)]
    assert texts == [b"id,t", b'100,12" pizza', b'2,"multi\nline"', b'3,"a"b"c', b"4,x"]
    assert records.lines.tolist() == [1, 2, 3, 5, 6]
    assert records.next_line == 6


def test_unclosed_quote_runs_to_the_end():
    records = scan_records(b'a\n"open\nb\n', 1, CSV)
    assert records.open_quote
    assert records.starts.tolist() == [0, 2]


def test_a_record_over_the_limit_is_skipped_without_holding_it():
    data = b"a\n" + b'"' + b"x\n" * 5000 + b'"\r\n' + b"b\r\nc\n"
    items = list(iter_record_blocks(io.BytesIO(data), None, 1000, CSV, max_record=4000))
    skipped = [item for item in items if isinstance(item, Oversized)]
    assert [(item.line, item.size) for item in skipped] == [(2, 10_004)]  # with its \r\n
    assert skipped[0].head.startswith(b'"x\nx\n')
    texts = [
        (block[s:e], line)
        for item in items
        if not isinstance(item, Oversized)
        for block, records in [item]
        for s, e, line in zip(records.starts, records.ends, records.lines)
    ]
    assert texts == [(b"a", 1), (b"b", 5003), (b"c", 5004)]


def _long_record_read(data: bytes, block_size: int, syntax: Syntax, long: bytes, end: bytes):
    """The records of `data` as `(text, line)`, with `long` (skipped or not) in its place;
    a skipped one must be `long` and its line end, whole in size and head."""
    seen = []
    for item in iter_record_blocks(io.BytesIO(data), None, block_size, syntax, max_record=20):
        if isinstance(item, Oversized):
            assert item.size == len(long + end) and (long + end).startswith(item.head)
            seen.append((long, item.line))
            continue
        block, records = item
        seen += [
            (bytes(block[s:e]), n) for s, e, n in zip(records.starts, records.ends, records.lines)
        ]
    return seen


@pytest.mark.parametrize("block_size", range(1, 40))
@pytest.mark.parametrize("end", [b"\r\n", b"\r"])
def test_an_oversized_record_ending_where_a_read_ends_keeps_the_next_record(block_size, end):
    """When the long record's `\r` is the last byte read, the record after it is neither
    swallowed nor cut (the `\n`, if any, comes in the next read). A long record that a read
    holds whole may come as a record (the parser sets it aside by its size)."""
    long = b"x" * 9 + b",y" * 6
    data = b"1,2" + end + long + end + b"KEEP,ME" + end + b"3,4" + end
    seen = _long_record_read(data, block_size, CSV, long, end)
    assert seen == [(b"1,2", 1), (long, 2), (b"KEEP,ME", 3), (b"3,4", 4)]


@pytest.mark.parametrize("block_size", range(1, 40))
def test_an_oversized_record_with_an_escape_split_between_reads_is_one_record(block_size):
    """An escaped line end inside a long record is no record end, even when the escape is
    the last byte of one read and the line end the first of the next."""
    syntax = Syntax(ord(","), ord('"'), ord("\\"))
    long = b"x" * 14 + b",abcdefghijklm\\\nn"
    seen = _long_record_read(b"1,2\n" + long + b"\n3,4\n", block_size, syntax, long, b"\n")
    assert seen == [(b"1,2", 1), (long, 2), (b"3,4", 4)]


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 8, 13, 1 << 20])
@pytest.mark.parametrize("end", [b"\n", b"\r"])  # an escape before `\r\n` takes the `\r` only
def test_records_after_an_escaped_line_end_keep_their_physical_line(block_size, end):
    """A line end made plain by an escape continues the record, but it is a line: the
    records after it are numbered as an editor shows them (as quoted line ends are)."""
    syntax = Syntax(ord(","), ord('"'), ord("\\"))
    data = b"a,b" + end + b"1,x\\" + end + b"y" + end + b"2,z" + end + b'3,"q' + end + b'r"' + end
    data += b"4,w\\" + end + b"\\" + end + b"v" + end + b"5,u"
    seen, next_line = [], None
    for _, records in iter_record_blocks(io.BytesIO(data), None, block_size, syntax):
        seen += records.lines.tolist()
        next_line = records.next_line
    assert seen == [1, 2, 4, 5, 7, 10]
    assert next_line == 10  # one more than the line ends before it: the last record has none


def plain_records(view: bytes, syntax: Syntax, first_line: int):
    """The quick path of `iter_record_blocks`: the cut and the records before it, or None."""
    found = _plain_cut(view, syntax)
    if found is None:
        return None
    cut, count = found
    return cut, _plain(view[:cut], first_line, count)


PLAIN_PIECES = [b"a", b"b", b",", b"\n", b'"', b"x", b'""', b'\n"', b'"\n', b',"', b"\r", b"\n\n"]


@pytest.mark.parametrize("seed", range(4))
def test_plain_records_agree_with_the_full_scan_or_decline(seed):
    """The quick path (`plain_records`) gives the full scan's cut and records, or None."""
    rng = random.Random(seed)
    syntax = Syntax(ord(","))
    taken = 0
    for _ in range(3000):
        weights = [rng.random() for _ in PLAIN_PIECES]
        weights[-2:] = [w * rng.choice([0, 1]) for w in weights[-2:]]  # often no \r, no \n\n
        weights[4:10] = [w * rng.choice([0, 0.1, 1]) for w in weights[4:10]]  # few quotes
        block = b"".join(rng.choices(PLAIN_PIECES, weights, k=rng.randint(1, 60)))
        quick = plain_records(block, syntax, 7)
        if quick is None:
            continue
        taken += 1
        cut, records = quick
        assert cut == last_record_end(block, syntax)
        full = scan_records(block[:cut], 7, syntax).nonempty()
        assert records.starts.tolist() == full.starts.tolist()
        assert records.ends.tolist() == full.ends.tolist()
        assert records.lines.tolist() == full.lines.tolist()
        assert records.next_line == full.next_line
        assert records.longest() >= int((full.ends - full.starts).max())
    assert taken > 50  # the quick path was taken, not always declined


def test_plain_records_declines_what_only_the_full_scan_reads():
    syntax = Syntax(ord(","))
    assert plain_records(b'a,"x\ny"\nb,c\n', syntax, 1) is None  # a line end inside quotes
    assert plain_records(b"a,b\r\nc,d\r\n", syntax, 1) is None  # \r
    assert plain_records(b"a,b\n\nc,d\n", syntax, 1) is None  # an empty line
    cut, records = plain_records(b'a,"x,y"\nb,c\nd,"open', syntax, 3)
    assert cut == len(b'a,"x,y"\nb,c\n')
    assert records.lines.tolist() == [3, 4] and records.next_line == 5
