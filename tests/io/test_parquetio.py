"""ReadFromParquet and WriteToParquet's schema unification and Hive-style partitions."""

import datetime
import decimal
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.errors import ConnectorError, ExpressionError
from beam_etl.io.parquetio import ReadFromParquet, WriteToParquet, partition_segment
from beam_etl.runner import LocalRunner

UTC = datetime.UTC
ROWS = [
    {
        "id": 1,
        "name": "Zoë 🚀",
        "amount": decimal.Decimal("12.50"),
        "day": datetime.date(2024, 1, 31),
        "at": datetime.datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "address": {"city": "Köln", "zip": "50667"},
    },
    {"id": 2, "name": None, "amount": None, "day": None, "at": None, "address": None},
]
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(10, 2)),
        ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("address", pa.struct([("city", pa.string()), ("zip", pa.string())])),
    ]
)


def _run(build):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    build(p)
    p.run().wait_until_finish()


def _files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table({"n": list(range(10)), "s": [f"v{i}" for i in range(10)]})
    pq.write_table(table, folder / "a.parquet", row_group_size=3)  # 4 row groups
    pq.write_table(pa.table({"n": [10, 11], "extra": [None, None]}), folder / "b.parquet")
    return str(folder / "*.parquet")


def test_reads_row_groups_with_projection_and_filter(pipeline, tmp_path):
    read = ReadFromParquet(_files(tmp_path), columns=["s", "n"], filter="n % 2 == 1 and n > 4")
    assert read.schema == pa.schema([("s", pa.string()), ("n", pa.int64())])
    batches = pipeline | "read" >> read
    assert_that(
        batches | beam.FlatMap(visible_rows),
        equal_to([{"s": f"v{n}", "n": n} for n in (5, 7, 9)] + [{"s": None, "n": 11}]),
        label="Rows",
    )
    origins = batches | beam.FlatMap(
        lambda b: zip(
            [os.path.basename(f) for f in b.column("__beam_etl_file").to_pylist()],
            b.column("__beam_etl_line").to_pylist(),
        )
    )
    expected = [("a.parquet", None)] * 3 + [("b.parquet", None)]
    assert_that(origins, equal_to(expected), label="Origins")
    pipeline.run().wait_until_finish()


def test_schema_is_the_union_of_the_files(tmp_path):
    read = ReadFromParquet(_files(tmp_path))
    assert read.schema == pa.schema([("n", pa.int64()), ("s", pa.string()), ("extra", pa.null())])


def test_round_trip_keeps_rows_and_types(pipeline, tmp_path):
    out = str(tmp_path / "out")
    batch = pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA)
    _run(lambda p: p | beam.Create([batch]) | WriteToParquet(out))
    read = ReadFromParquet(out + "/*.parquet")
    assert read.schema == SCHEMA
    assert_that(pipeline | read | beam.FlatMap(visible_rows), equal_to(ROWS), label="Rows")
    pipeline.run().wait_until_finish()


def test_batches_with_other_columns_are_written_with_one_schema(tmp_path):
    out = str(tmp_path / "out")
    batches = [
        pa.record_batch({"id": [1], "note": pa.nulls(1, pa.null())}),
        pa.record_batch({"id": [2], "note": ["x"], "extra": [1.5]}),
        pa.record_batch({"id": [3]}),
    ]
    _run(lambda p: p | beam.Create(batches) | WriteToParquet(out))
    table = pq.read_table(out)
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("note", pa.string()), ("extra", pa.float64())]
    )
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "note": None, "extra": None},
        {"id": 2, "note": "x", "extra": 1.5},
        {"id": 3, "note": None, "extra": None},
    ]


def test_incompatible_batches_fail_the_run_and_publish_nothing(tmp_path):
    out = tmp_path / "out"
    batches = [pa.record_batch({"id": [1]}), pa.record_batch({"id": ["x"]})]
    with pytest.raises(Exception, match="incompatible types"):
        _run(lambda p: p | beam.Create(batches) | WriteToParquet(str(out)))
    assert not out.exists()


def test_partitioned_write_reads_back_as_hive_dataset(tmp_path):
    out = tmp_path / "flights"
    batch = pa.record_batch(
        {"year": [2013, 2013, 2014], "month": [1, 2, 1], "delay": [5.0, None, -1.0]}
    )
    _run(
        lambda p: (
            p | beam.Create([batch]) | WriteToParquet(str(out), partition_by=["year", "month"])
        )
    )
    files = sorted(str(path.relative_to(out)) for path in out.rglob("*.parquet"))
    assert files == [
        "year=2013/month=1/part-00000.parquet",
        "year=2013/month=2/part-00001.parquet",
        "year=2014/month=1/part-00002.parquet",
    ]
    assert (out / "_SUCCESS").exists()
    assert pq.read_schema(out / files[0]).names == ["delay"]
    rows = ds.dataset(out, partitioning="hive").to_table().to_pylist()
    assert sorted(rows, key=lambda r: (r["year"], r["month"])) == [
        {"delay": 5.0, "year": 2013, "month": 1},
        {"delay": None, "year": 2013, "month": 2},
        {"delay": -1.0, "year": 2014, "month": 1},
    ]


@pytest.mark.parametrize(
    ("value", "read_back"),
    [
        pytest.param("../../escape", "../../escape", id="parent-traversal"),
        pytest.param("/etc", "/etc", id="absolute"),
        pytest.param("a\\b", "a\\b", id="backslash"),
        pytest.param("nul\x00byte", "nul\x00byte", id="nul"),
        pytest.param("k=v%20", "k=v%20", id="equals-and-percent"),
        pytest.param("..", "..", id="dot-dot"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="null"),
    ],
)
def test_partition_values_never_leave_the_folder(tmp_path, value, read_back):
    out = tmp_path / "nest" / "out"
    batch = pa.record_batch({"key": pa.array([value], pa.string()), "n": [1]})
    _run(lambda p: p | beam.Create([batch]) | WriteToParquet(str(out), partition_by=["key"]))
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert all(out in path.parents for path in written)
    assert len([path for path in written if path.suffix == ".parquet"]) == 1
    dataset = ds.dataset(
        out, partitioning=ds.partitioning(pa.schema([("key", pa.string())]), flavor="hive")
    )
    assert dataset.to_table().to_pylist() == [{"n": 1, "key": read_back}]


def test_partition_segment_is_one_path_segment():
    assert partition_segment("a/b", "../x") == "a%2Fb=..%2Fx"
    assert partition_segment("day", datetime.date(2024, 1, 31)) == "day=2024-01-31"
    assert partition_segment("ok", True) == "ok=true"


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        pytest.param(lambda d: None, ConnectorError, "No file matches", id="glob-matches-nothing"),
        pytest.param(
            lambda d: (d / "e.parquet").write_bytes(b""),
            ConnectorError,
            r"footer of `.*e\.parquet`.*0 bytes",
            id="empty-file",
        ),
        pytest.param(
            lambda d: (d / "c.parquet").write_bytes(b"PAR1" + b"x" * 64),
            ConnectorError,
            r"footer of `.*c\.parquet`.*magic bytes",
            id="corrupted-footer",
        ),
    ],
)
def test_unreadable_input_is_a_clear_error_naming_the_file(tmp_path, make, error, message):
    make(tmp_path)
    with pytest.raises(error, match=message):
        ReadFromParquet(str(tmp_path / "*.parquet"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"columns": ["nope"]}, ValueError, "`columns` `nope`", id="unknown-column"),
        pytest.param({"filter": "n +"}, ExpressionError, "Syntax error", id="bad-filter"),
        pytest.param({"filter": "n + 1"}, ValueError, "must be a boolean", id="non-boolean-filter"),
    ],
)
def test_bad_configuration_is_a_clear_error(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        ReadFromParquet(_files(tmp_path), **kwargs)


@pytest.mark.parametrize("partition_by", [[], [""], ["a", "a"]], ids=["empty", "blank", "twice"])
def test_bad_partition_by_is_refused(tmp_path, partition_by):
    with pytest.raises(ValueError, match="`partition_by` must be a list of distinct"):
        WriteToParquet(str(tmp_path / "out"), partition_by=partition_by)
