"""Parquet, SQLite and dead-letter sinks: round trips, atomic publishing, idempotent re-runs."""

import datetime
import decimal
import json
import os
import sqlite3

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline

from beam_etl.core.batches import with_origin
from beam_etl.core.deadletter import DeadLetter
from beam_etl.io.deadletters import WriteToDeadLetters
from beam_etl.io.parquetio import WriteToParquet
from beam_etl.io.sqliteio import WriteToSqlite
from beam_etl.runner import LocalRunner

BATCH = pa.record_batch(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(["ä", None, "c"], pa.string()),
        "amount": pa.array(
            [decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], pa.decimal128(10, 2)
        ),
        "day": pa.array([datetime.date(2024, 1, 31), None, datetime.date(1999, 12, 31)]),
        "at": pa.array(
            [datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC), None, None],
            pa.timestamp("us", tz="UTC"),
        ),
        "ok": pa.array([True, None, False]),
    }
)


def _run(build):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    build(p)
    p.run().wait_until_finish()


def test_parquet_round_trip_keeps_rows_and_types_and_drops_origin_columns(tmp_path):
    out = str(tmp_path / "out")
    batch = with_origin(BATCH, "in.csv", [2, 3, 4])
    _run(lambda p: p | beam.Create([batch]) | WriteToParquet(out, compression="zstd"))
    table = pq.read_table(out)
    assert table.schema == BATCH.schema
    assert table.to_pylist() == BATCH.to_pylist()
    marker = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert marker["rows"] == 3


def test_parquet_rerun_replaces_instead_of_duplicating(tmp_path):
    out = str(tmp_path / "out")
    for _ in range(2):
        _run(lambda p: p | beam.Create([BATCH, BATCH]) | WriteToParquet(out))
    assert pq.read_table(out).num_rows == 6
    assert not os.path.exists(tmp_path / ".beam_etl-staging")


def test_parquet_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="Refusing to replace"):
        _run(lambda p: p | beam.Create([BATCH]) | WriteToParquet(str(out)))
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_run_leaves_previous_parquet_output_untouched(tmp_path):
    out = str(tmp_path / "out")
    _run(lambda p: p | beam.Create([BATCH]) | WriteToParquet(out))

    def explode(batch):
        raise RuntimeError("boom")

    def failing(p):
        batches = p | beam.Create([BATCH])
        _ = batches | WriteToParquet(out)
        _ = batches | beam.Map(explode)

    with pytest.raises(Exception, match="boom"):
        _run(failing)
    assert pq.read_table(out).num_rows == 3


def test_sqlite_replace_append_and_ledger(tmp_path):
    db = str(tmp_path / "w.sqlite")
    _run(lambda p: p | beam.Create([BATCH]) | WriteToSqlite(db, "t", run_id="r1"))
    _run(lambda p: p | beam.Create([BATCH]) | WriteToSqlite(db, "t", mode="append", run_id="r2"))
    # the same run id again is a no-op, whatever the mode
    _run(lambda p: p | beam.Create([BATCH]) | WriteToSqlite(db, "t", mode="append", run_id="r2"))
    connection = sqlite3.connect(db)
    rows = connection.execute("SELECT id, name, amount, day, ok FROM t ORDER BY rowid").fetchall()
    assert rows[:3] == [
        (1, "ä", "1.50", "2024-01-31", 1),
        (2, None, None, None, None),
        (3, "c", "-2.25", "1999-12-31", 0),
    ]
    assert len(rows) == 6
    ledger = connection.execute("SELECT run_id, rows_written FROM _beam_etl_runs ORDER BY 1")
    assert ledger.fetchall() == [("r1", 3), ("r2", 3)]
    _run(lambda p: p | beam.Create([BATCH]) | WriteToSqlite(db, "t", run_id="r3"))
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (3,)


@pytest.mark.parametrize("table", ["x; DROP TABLE t", "1abc", "a.b.c-d", ""])
def test_sqlite_rejects_unsafe_table_names(tmp_path, table):
    with pytest.raises(ValueError, match="Invalid table name"):
        WriteToSqlite(str(tmp_path / "w.sqlite"), table)


def test_dead_letters_file_is_sorted_by_origin_and_stamped(tmp_path):
    path = str(tmp_path / "dl.jsonl")
    letters = [
        DeadLetter("cast", "cast_failed", "bad", "b.csv", 3, None, {"a": "x"}),
        DeadLetter("read", "malformed_csv", "fields", "a.csv", 10, None, "1,2"),
        DeadLetter("read", "malformed_csv", "fields", "a.csv", 2, None, "1"),
    ]
    _run(lambda p: p | beam.Create(letters) | WriteToDeadLetters(path, run_id="run-7"))
    records = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert [(r["origin"], r["reason"], r["run_id"]) for r in records] == [
        ("a.csv:2", "malformed_csv", "run-7"),
        ("a.csv:10", "malformed_csv", "run-7"),
        ("b.csv:3", "cast_failed", "run-7"),
    ]
    assert records[2]["payload"] == {"a": "x"}
