"""WriteToCsv: round trips through ReadFromCsv, compression, atomic publish."""

import datetime
import decimal
import gzip
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.io.csvio import ReadFromCsv, WriteToCsv
from beam_etl.runner import LocalRunner

UTC = datetime.UTC
BATCH = pa.record_batch(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(['Zoë, "the" first', None, "line\nbreak"]),
        "amount": pa.array(
            [decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], pa.decimal128(10, 2)
        ),
        "day": pa.array([datetime.date(2024, 1, 31), None, datetime.date(1999, 12, 31)]),
        "at": pa.array(
            [
                datetime.datetime(2024, 1, 1, 12, tzinfo=UTC),
                None,
                datetime.datetime(1970, 1, 1, tzinfo=UTC),
            ],
            pa.timestamp("us", tz="UTC"),
        ),
        "ok": pa.array([True, None, False]),
    }
)
TYPES = {
    "id": "int64",
    "name": "string",
    "amount": "decimal(10,2)",
    "day": "date",
    "at": "timestamp[us, UTC]",
    "ok": "bool",
}


def _write(path, *batches, **options):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    _ = p | beam.Create(list(batches)) | WriteToCsv(str(path), **options)
    p.run().wait_until_finish()


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.csv.bz2", "out.csv.zst"])
def test_round_trip_keeps_rows_and_types(tmp_path, pipeline, name):
    path = tmp_path / name
    _write(path, with_origin(BATCH, "in.csv", [2, 3, 4]))
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).startswith(b'"id","name"')
    read = pipeline | ReadFromCsv(str(path), columns=TYPES)
    assert_that(read.output | beam.FlatMap(visible_rows), equal_to(BATCH.to_pylist()), label="Rows")
    assert_that(read.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary or staging left


def test_semicolons_without_header_and_rerun_replaces(tmp_path):
    path = tmp_path / "plain.csv"
    small = BATCH.select(["id", "ok"])
    _write(path, small, header=False, delimiter=";")
    _write(path, small, header=False, delimiter=";")
    assert sorted(path.read_text().splitlines()) == ["1;true", "2;", "3;false"]


def test_batches_with_other_columns_share_one_header(tmp_path):
    path = tmp_path / "mixed.csv"
    _write(path, pa.record_batch({"a": [1]}), pa.record_batch({"a": [2], "b": ["x"]}))
    lines = path.read_text().splitlines()
    assert lines[0] == '"a","b"'
    assert sorted(lines[1:]) == ["1,", '2,"x"']


def test_nested_columns_are_json_text(tmp_path):
    path = tmp_path / "nested.csv"
    batch = pa.record_batch({"k": [1], "tags": pa.array([["a", "b"]]), "s": [{"x": 1}]})
    _write(path, batch)
    assert path.read_text().splitlines()[1] == '1,"[""a"",""b""]","{""x"":1}"'


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"compression": "rar"}, "Unknown compression `rar`", id="compression"),
        pytest.param({"delimiter": "::"}, "`delimiter` must be one character", id="delimiter"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        WriteToCsv(str(tmp_path / "x.csv"), **options)


def test_null_and_empty_text_are_written_apart_and_read_back_equal(tmp_path, pipeline):
    """Issue 14: `""` and `"NULL"` read back as null, so a written file did not read back."""
    batch = pa.record_batch(
        {
            "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "text": ["", None, "NULL", "null", "\\N"],
            "n": pa.array([1, None, 3, None, 5], pa.int64()),
        }
    )
    path = tmp_path / "nulls.csv"
    _write(path, batch)
    lines = path.read_text().splitlines()
    assert lines[0] == '"id","text","n"'
    assert sorted(lines[1:]) == ['1,"",1', "2,,", '3,"NULL",3', '4,"null",', '5,"\\N",5']
    read = pipeline | ReadFromCsv(str(path), columns={"id": "int64", "text": "string"})
    assert_that(read.output | beam.FlatMap(visible_rows), equal_to(batch.to_pylist()), label="Rows")
    assert_that(read.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


def test_a_large_output_rendered_in_threads_is_what_one_writer_writes(tmp_path, monkeypatch):
    # ~24 MiB of batches: several groups rendered at once (core.threads.ordered_map, 3 threads
    # whatever the machine), written in order; the bytes must be one pyarrow writer's.
    monkeypatch.setenv("BEAM_ETL_THREADS", "3")
    rows = 40_000
    batches = [
        pa.record_batch(
            {
                "id": pa.array(range(start, start + rows), pa.int64()),
                "text": pa.array([f'row {n}, "quoted"' + "x" * 150 for n in range(rows)]),
                "value": pa.array([n / 7 if n % 5 else None for n in range(rows)]),
            }
        )
        for start in range(0, 4 * rows, rows)
    ]
    path = tmp_path / "big.csv"
    _write(path, *batches)
    expected = pa.BufferOutputStream()
    options = pacsv.WriteOptions(quoting_style="needed")
    with pacsv.CSVWriter(expected, batches[0].schema, write_options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    assert sum(b.nbytes for b in batches) > 3 * (8 << 20)
    assert path.read_bytes() == expected.getvalue().to_pybytes()


ALL_TYPES = pa.record_batch(
    {
        "i": pa.array([1, None, -5], pa.int64()),
        "u": pa.array([0, 2**64 - 1, None], pa.uint64()),
        "f": pa.array([0.1, float("nan"), None], pa.float64()),
        "g": pa.array([float("inf"), -float("inf"), 1e-300], pa.float32()),
        "b": pa.array([True, None, False]),
        "s": pa.array(['a,"b"\nc', "", None]),
        "ls": pa.array(["NULL", "x", None], pa.large_string()),
        "d": pa.array([datetime.date(1, 1, 1), None, datetime.date(9999, 12, 31)]),
        "t": pa.array([datetime.datetime(2024, 1, 1, 1, 2, 3, 456789), None, None]),
        "tn": pa.array([1, None, -1], pa.timestamp("ns")),
        "tz": pa.array([0, None, 86_400_000_000], pa.timestamp("us", tz="Europe/Paris")),
        "dec": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-0.01")]),
    }
)


def _rendered(batch, header=False):
    out = pa.BufferOutputStream()
    options = pacsv.WriteOptions(include_header=header, quoting_style="needed")
    with pacsv.CSVWriter(out, batch.schema, write_options=options) as writer:
        writer.write(batch)
    return out.getvalue().to_pybytes()


def test_parts_staged_as_text_and_aligned_at_the_publish_are_what_one_writer_writes(tmp_path):
    """Bundles stage text parts; parts of other columns are read back and aligned, to the
    bytes the publish would render from the Arrow batches themselves (every type staged as
    text reads back exactly), and a part staged as Arrow (a list column) joins them."""
    wider = ALL_TYPES.append_column("extra", pa.array([[1], None, [2, 3]]))
    path = tmp_path / "all.csv"
    _write(path, ALL_TYPES, wider)
    schema = pa.unify_schemas([ALL_TYPES.schema, wider.schema])
    from beam_etl.core.batches import conform_columns

    first = _rendered(conform_columns(ALL_TYPES, schema).set_column(12, "extra", pa.nulls(3)))
    second = _rendered(wider.set_column(12, "extra", pa.array(["[1]", None, "[2,3]"], pa.string())))
    header = _rendered(wider.schema.set(12, pa.field("extra", pa.string())).empty_table(), True)
    assert path.read_bytes() in (header + first + second, header + second + first)


def test_one_schema_is_copied_as_staged(tmp_path, monkeypatch):
    from beam_etl.io import csvio

    read_back = []
    monkeypatch.setattr(csvio, "_read_back", lambda *a: read_back.append(a) or iter(()))
    path = tmp_path / "same.csv"
    _write(path, ALL_TYPES, ALL_TYPES)
    assert read_back == []  # copied, never parsed again
    body = _rendered(ALL_TYPES)
    assert path.read_bytes() == _rendered(ALL_TYPES.schema.empty_table(), header=True) + body * 2


def test_a_record_over_a_block_is_read_back_when_parts_are_aligned(tmp_path):
    long = "x" * (3 << 20)  # longer than pyarrow's 1 MiB blocks, and than the copy chunks
    path = tmp_path / "long.csv"
    _write(
        path,
        pa.record_batch({"a": [long], "b": pa.array([1], pa.int64())}),
        pa.record_batch({"a": ["y"], "b": pa.array([2], pa.int32())}),
        pa.record_batch({"a": [None], "b": pa.array([3], pa.int64()), "c": [-1.5]}),
    )
    read = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=8 << 20),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )
    assert sorted(read.to_pylist(), key=lambda r: r["b"]) == [
        {"a": long, "b": 1, "c": None},
        {"a": "y", "b": 2, "c": None},
        {"a": None, "b": 3, "c": -1.5},
    ]


def test_text_parts_keep_their_order_when_the_kernel_copy_fails_for_one(tmp_path, monkeypatch):
    from beam_etl.io._files import copy_parts

    copy = os.copy_file_range
    calls = []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(18, "cross-device")
        return copy(*args)

    monkeypatch.setattr(os, "copy_file_range", flaky)
    parts = []
    for n in range(3):
        part = tmp_path / f"p{n}.csv"
        part.write_bytes(f"{n}\n".encode() * 3)
        parts.append(part)
    with open(tmp_path / "out.csv", "wb") as out:
        out.write(b"head\n")
        copy_parts([(str(part), 3) for part in parts], out)
    assert (tmp_path / "out.csv").read_bytes() == b"head\n0\n0\n0\n1\n1\n1\n2\n2\n2\n"
    assert len(calls) >= 2  # the kernel copied the later parts


def test_negative_scale_decimals_are_staged_as_arrow():
    from beam_etl.io.csvio import _renders_exactly

    assert _renders_exactly(pa.schema([("d", pa.decimal128(10, 2))]))
    assert not _renders_exactly(pa.schema([("d", pa.decimal128(3, -2))]))
