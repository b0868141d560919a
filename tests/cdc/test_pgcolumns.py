"""`tuple_columns`: many pgoutput row messages decoded at once equal the one-by-one decoder."""

import struct

import pytest

from beam_etl.io._pgcolumns import tuple_columns
from beam_etl.io._pgoutput import NEW_TUPLE_AT, UNCHANGED, _tuple, plain_new_row


def _message(kind: bytes, values, *, old: bytes = b"") -> bytes:
    out = kind + struct.pack(">I", 16384) + old + b"N" + struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            data = value if isinstance(value, bytes) else value.encode()
            out += b"t" + struct.pack(">i", len(data)) + data
    return out


def test_bulk_equals_one_by_one_with_nulls_empty_text_and_utf8():
    rows = [[str(i), None if i % 3 else f"nöte {i} ✓", "", "x" * (i * 40)] for i in range(9)]
    messages = [_message(b"I" if i % 2 else b"U", row) for i, row in enumerate(rows)]
    assert all(plain_new_row(m) for m in messages)
    columns = tuple_columns(messages, 4)
    assert [list(r) for r in zip(*(c.to_pylist() for c in columns))] == rows
    assert rows == [_tuple(m, NEW_TUPLE_AT)[0] for m in messages]
    assert [c.to_pylist() for c in tuple_columns([], 2)] == [[], []]


def test_unchanged_toast_values_and_other_widths_are_left_to_the_one_by_one_decoder():
    plain = _message(b"I", ["1", "a"])
    assert tuple_columns([plain, _message(b"U", ["2", UNCHANGED])], 2) is None
    assert tuple_columns([plain, _message(b"I", ["3"])], 2) is None


def test_only_inserts_and_updates_without_an_old_row_are_plain():
    assert not plain_new_row(_message(b"U", ["1", "a"], old=b"K\x00\x01n"))
    assert not plain_new_row(b"D" + struct.pack(">I", 1) + b"K\x00\x00")


@pytest.mark.parametrize(
    "broken",
    [
        _message(b"I", ["1", "abc"])[:-1],  # cut inside a value
        _message(b"I", ["1", "abc"])[: NEW_TUPLE_AT + 3],  # cut after the count
        _message(b"I", ["1", b"\xff\xfe"]),  # not UTF-8
        _message(b"I", ["1"]).replace(b"\x00\x01t", b"\x00\x02t") + b"x",  # unknown kind
    ],
)
def test_a_malformed_message_raises(broken):
    with pytest.raises(ValueError):
        tuple_columns([_message(b"I", ["0", "z"]), broken], 2)


def test_a_batch_mixing_undecoded_rows_and_decoded_ones_keeps_every_row_in_its_place():
    import pyarrow as pa

    from beam_etl.io._changes import EventBuilder
    from beam_etl.io._pgcolumns import tuple_columns

    columns = pa.schema([("id", pa.int64()), ("name", pa.string())])

    def one(message):
        return _tuple(message, NEW_TUPLE_AT)[0]

    mixed = EventBuilder(columns, step="s", table="t", text=True, raw=(tuple_columns, one))
    plain = EventBuilder(columns, step="s", table="t", text=True)
    for seq in range(7):
        row = [str(seq), None if seq == 3 else f"n{seq}"]
        if seq % 3 == 2:  # a delete, decoded on arrival
            mixed.add("d", row, ts=None, position="0/1", txid=1, seq=seq)
        else:
            mixed.add_raw("c", _message(b"I", row), None, "0/1", 1, seq)
        plain.add("d" if seq % 3 == 2 else "c", row, ts=None, position="0/1", txid=1, seq=seq)
    assert mixed.build().to_pylist() == plain.build().to_pylist()
