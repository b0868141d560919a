"""Batches sized by bytes: the sizer on its own, then readers of real files and databases whose
batches follow the width of their rows (wide rows: fewer rows a batch; narrow: more)."""

import logging
import sqlite3

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline

from beam_etl.core import batching
from beam_etl.core.batches import visible
from beam_etl.core.batching import DEFAULT_BATCH_BYTES, BatchSizer, estimated_row_bytes
from beam_etl.io.avroio import ReadFromAvro
from beam_etl.io.parquetio import ROW_GROUP_BYTES, ReadFromParquet, WriteToParquet
from beam_etl.io.sqliteio import ReadFromSqlite
from beam_etl.runner import LocalRunner

_FOUND: list = []
_WIDE_TEXT = 4096  # bytes of text in each of the wide rows' columns


def _keep(batch: pa.RecordBatch) -> None:
    _FOUND.append(visible(batch))


def _batches(source: beam.PTransform) -> list[pa.RecordBatch]:
    _FOUND.clear()
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    _ = p | source | beam.Map(_keep)
    p.run().wait_until_finish()
    return [b for b in _FOUND if b.num_rows]


def _wide_rows(count: int) -> pa.Table:
    """`count` rows of ~16 KiB each (4 text columns of 4 KiB and a key)."""
    texts = {f"t{i}": [f"{n:08d}" + "x" * (_WIDE_TEXT - 8) for n in range(count)] for i in range(4)}
    return pa.table({"id": list(range(count)), **texts})


def _narrow_rows(count: int) -> pa.Table:
    return pa.table(
        {"id": pa.array(range(count), pa.int64()), "flag": [n % 2 == 0 for n in range(count)]}
    )


# -- the sizer ------------------------------------------------------------------------------


def test_a_size_given_by_the_user_is_kept_whatever_the_width():
    sizer = BatchSizer("Read", rows=123)
    sizer.observe(_wide_rows(10))
    assert sizer.fixed and sizer.rows() == 123


def test_rows_follow_the_measured_width_of_the_batches():
    sizer = BatchSizer("Read", target_bytes=1 << 20)
    wide = _wide_rows(50)  # ~16 KiB a row
    sizer.observe(wide)
    assert 40 <= sizer.rows() <= 80  # 1 MiB / 16 KiB = 64
    narrow = BatchSizer("Read", target_bytes=1 << 20)
    narrow.observe(_narrow_rows(1000))  # ~8 bytes a row
    assert narrow.rows() > 100_000


def test_the_first_guess_comes_from_the_schema():
    fixed = pa.schema([("a", pa.int64()), ("b", pa.float64())])
    target = 1 << 20  # small: no machine is short of 64 MiB, so no shrinking below
    sized = BatchSizer("Read", schema=fixed, target_bytes=target)
    assert sized.measured and sized.rows() == int(target / (16 + 2 / 8))
    with_text = fixed.append(pa.field("c", pa.string()))
    assert 16 + 32 <= estimated_row_bytes(with_text) <= 16 + 40
    # text may be far wider than guessed: a first batch of PROBE_ROWS measures it
    sizer = BatchSizer("Read", schema=with_text, target_bytes=target)
    assert not sizer.measured
    assert sizer.rows() == batching.PROBE_ROWS
    sizer.observe(_narrow_rows(1000))
    assert sizer.rows() > batching.PROBE_ROWS


def test_batches_shrink_when_memory_is_short():
    target = 8 << 20
    assert batching.pressure_scale(target, None) == 1.0
    assert batching.pressure_scale(target, 64 << 30) == 1.0
    assert batching.pressure_scale(target, 128 << 20) == pytest.approx(0.25)
    assert batching.pressure_scale(target, 0) == pytest.approx(1 / 8)


def test_rows_built_as_objects_are_capped():
    sizer = BatchSizer("Read", max_rows=batching.PYTHON_ROWS)
    sizer.observe(_narrow_rows(1000))  # ~9 bytes a row: ~900,000 rows would make 8 MiB
    assert sizer.rows() == batching.PYTHON_ROWS


def test_the_chosen_size_is_logged_at_debug(caplog):
    with caplog.at_level(logging.DEBUG, logger="beam_etl.core.batching"):
        sizer = BatchSizer("ReadOrders", target_bytes=1 << 20)
        sizer.observe(_wide_rows(50))
        rows = sizer.rows()
        sizer.rows()  # the same size again: no second line
    lines = [r.getMessage() for r in caplog.records if "ReadOrders" in r.getMessage()]
    assert len(lines) == 1 and f"batches of {rows} rows" in lines[0]


def test_batch_rows_must_be_a_positive_integer_or_none():
    batching.check_batch_rows(None)
    batching.check_batch_rows(10)
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="batch_rows"):
            batching.check_batch_rows(bad)


# -- readers --------------------------------------------------------------------------------


def _assert_by_bytes(batches: list[pa.RecordBatch], rows: int) -> None:
    assert sum(b.num_rows for b in batches) == rows
    assert max(b.nbytes for b in batches) <= 2 * DEFAULT_BATCH_BYTES
    assert len(batches) >= 2  # a ~30 MiB input does not come as one batch


def test_parquet_batches_of_wide_rows_stay_a_few_mib(tmp_path):
    path = tmp_path / "wide.parquet"
    pq.write_table(_wide_rows(2000), path, row_group_size=2000)  # one ~32 MiB row group
    batches = _batches(ReadFromParquet(str(path)))
    _assert_by_bytes(batches, 2000)
    ids = pa.concat_arrays([b.column("id") for b in batches]).to_pylist()
    assert sorted(ids) == list(range(2000))


def test_parquet_batches_of_dictionary_encoded_text_are_measured_not_taken_from_the_footer(
    tmp_path,
):
    # 10 distinct 80-byte texts: the footer's encoded size is ~1 byte a row, Arrow's ~90.
    rows = 400_000
    texts = pa.array([f"{n % 10:02d}" + "t" * 78 for n in range(rows)])
    path = tmp_path / "coded.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=rows)
    footer = pq.ParquetFile(path).metadata.row_group(0)
    assert footer.column(0).total_uncompressed_size < rows * 8  # encoded: small
    batches = _batches(ReadFromParquet(str(path)))
    assert sum(b.num_rows for b in batches) == rows
    assert max(b.nbytes for b in batches) <= 2 * DEFAULT_BATCH_BYTES


def test_parquet_batches_of_narrow_rows_hold_more_than_the_old_fixed_size(tmp_path):
    path = tmp_path / "narrow.parquet"
    pq.write_table(_narrow_rows(400_000), path, row_group_size=400_000)
    batches = _batches(ReadFromParquet(str(path)))
    assert sum(b.num_rows for b in batches) == 400_000
    assert max(b.num_rows for b in batches) > 131_072  # pyarrow's default batch size


def test_sqlite_batches_follow_the_width_of_the_rows(tmp_path):
    path = tmp_path / "wide.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE wide (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
        connection.executemany(
            "INSERT INTO wide VALUES (?, ?, ?)",
            ((n, "a" * 8192, "b" * 8192) for n in range(2000)),
        )
        connection.execute("CREATE TABLE narrow (id INTEGER PRIMARY KEY, v INTEGER)")
        connection.executemany("INSERT INTO narrow VALUES (?, ?)", ((n, n) for n in range(120_000)))
    wide = _batches(ReadFromSqlite(database=str(path), table="wide"))
    _assert_by_bytes(wide, 2000)
    narrow = _batches(ReadFromSqlite(database=str(path), table="narrow"))
    assert sum(b.num_rows for b in narrow) == 120_000
    sizes = [b.num_rows for b in narrow]
    assert max(sizes) > 50_000  # more than the driver rows fetched at once (PYTHON_ROWS)
    assert min(sizes) > 1_000  # no sliver of a few rows between full batches
    fixed = _batches(ReadFromSqlite(database=str(path), table="narrow", batch_rows=1000))
    assert max(b.num_rows for b in fixed) == 1000


def test_avro_batches_follow_the_width_of_the_records(tmp_path):
    path = tmp_path / "wide.avro"
    schema = {
        "type": "record",
        "name": "Wide",
        "fields": [{"name": "id", "type": "long"}, {"name": "text", "type": "string"}],
    }
    with open(path, "wb") as out:
        fastavro.writer(out, schema, ({"id": n, "text": "z" * 16384} for n in range(2000)))
    _assert_by_bytes(_batches(ReadFromAvro(str(path))), 2000)


def test_parquet_row_groups_of_wide_rows_close_by_bytes(tmp_path):
    rows = 6000  # ~96 MiB of ~16 KiB rows: more than one row group of ROW_GROUP_BYTES
    source = tmp_path / "wide.parquet"
    pq.write_table(_wide_rows(rows), source, row_group_size=500)
    target = tmp_path / "out"
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    _ = p | ReadFromParquet(str(source)) | WriteToParquet(str(target))
    p.run().wait_until_finish()
    groups = [
        (meta.num_rows, meta.total_byte_size)
        for part in sorted(target.glob("*.parquet"))
        for meta in (
            pq.ParquetFile(part).metadata.row_group(i)
            for i in range(pq.ParquetFile(part).num_row_groups)
        )
    ]
    assert sum(n for n, _ in groups) == rows
    assert len(groups) >= 2
    assert (
        max(n for n, _ in groups) < rows
        and max(n for n, _ in groups) <= ROW_GROUP_BYTES // (16 << 10) + 600
    )


def test_database_batches_of_varied_text_have_no_slivers(tmp_path):
    path = tmp_path / "varied.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT)")
        connection.executemany(
            "INSERT INTO t VALUES (?, ?)", ((n, "v" * (n * 7919 % 401)) for n in range(200_000))
        )
    sizes = [b.num_rows for b in _batches(ReadFromSqlite(database=str(path), table="t"))]
    assert sum(sizes) == 200_000
    assert len(sizes) >= 3
    assert min(sizes[:-1]) > max(sizes) // 3  # even parts, not a full batch and a few rows
