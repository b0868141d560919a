"""`unloadable`: what a database cannot store exactly, found in Arrow before loading."""

import pyarrow as pa
import pytest

from beam_etl.io.sql.values import unloadable


def _text(values, kind):
    return pa.record_batch({"t": pa.array(values, kind)})


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_text_faults_are_found_in_sliced_columns_and_ruled_out_from_their_bytes(kind):
    batch = _text(["ok", "a\x00b", None, "é", "x" * 10, "fine"], kind)
    assert unloadable(batch, "postgres") == {
        1: "column `t`: PostgreSQL text cannot hold NUL (0x00)"
    }
    assert unloadable(batch, "mysql") == {}  # MySQL text holds NUL
    assert unloadable(batch.slice(2), "postgres", {"t": 3}) == {
        2: "column `t`: longer than 3",  # x * 10
        3: "column `t`: longer than 3",  # fine
    }
    assert unloadable(batch.slice(5), "postgres", {"t": 4}) == {}
    assert unloadable(batch.slice(3, 1), "postgres", {"t": 1}) == {}  # é: 2 bytes, 1 character


def test_invalid_utf8_and_out_of_range_timestamps_are_refused():
    bad = pa.array([b"ok", b"\xff\xfe", None], pa.binary()).view(pa.string())
    assert unloadable(pa.record_batch({"t": bad}), "postgres") == {
        1: "column `t`: text is not valid UTF-8"
    }
    ticks = [-62_135_596_800_000_001, 0, None, 253_402_300_800_000_000]
    stamps = pa.record_batch({"ts": pa.array(ticks, pa.timestamp("us"))})
    assert unloadable(stamps, "postgres") == {
        0: "column `ts`: before year 1, which cannot be loaded"
    }
    assert unloadable(stamps, "mysql") == {
        0: "column `ts`: before year 1, which cannot be loaded",
        3: "column `ts`: after year 9999, which MySQL cannot store",
    }


def test_empty_and_all_null_columns_have_nothing_to_refuse():
    empty = pa.Array.from_buffers(pa.string(), 0, [None, pa.py_buffer(b""), pa.py_buffer(b"")])
    nulls = pa.record_batch({"t": pa.nulls(3, pa.string()), "ts": pa.nulls(3, pa.timestamp("s"))})
    assert unloadable(pa.record_batch({"t": empty}), "postgres", {"t": 1}) == {}
    assert unloadable(nulls, "mysql", {"t": 0}) == {}
