"""Record boundaries, line numbers and split points from raw CSV bytes."""

import io

import pytest

from beam_etl.io._csvscan import iter_record_blocks, scan_records, split_points

QUOTE = ord('"')


def test_records_know_their_first_line_across_quoted_newlines():
    block = b'a,b\n1,"x\ny"\n\n2,z\r\n3,"q""\n"\n'
    records = scan_records(block, 10, QUOTE).nonempty()
    texts = [block[s:e] for s, e in zip(records.starts, records.ends)]
    assert texts == [b"a,b", b'1,"x\ny"', b"2,z", b'3,"q""\n"']
    assert records.lines.tolist() == [10, 11, 14, 15]


def test_last_record_without_newline_is_a_record():
    records = scan_records(b"a\nb", 1, QUOTE)
    assert records.lines.tolist() == [1, 2]


def test_blocks_hold_whole_records_only():
    data = b"".join(b'%d,"line\nbreak %d"\n' % (i, i) for i in range(500))
    blocks = list(iter_record_blocks(io.BytesIO(data), None, 97, QUOTE))
    assert b"".join(blocks) == data
    for block in blocks:
        assert block.count(b'"') % 2 == 0


@pytest.mark.parametrize("split_size", [50, 333, 4096])
def test_split_points_are_record_boundaries(split_size):
    data = b"".join(b'%d,"a\nb,%d",x\n' % (i, i) for i in range(2000))
    points = split_points(io.BytesIO(data), len(data), split_size, QUOTE, read_size=1000)
    assert points[0] == (0, 1)
    assert len(points) > 3
    starts = {0} | {i + 1 for i in range(len(data)) if data[i : i + 1] == b"\n"}
    for offset, line in points:
        assert offset in starts
        assert data[:offset].count(b'"') % 2 == 0
        assert line == data[:offset].count(b"\n") + 1
