"""ReadFromSqlite on real SQLite files: types by declared affinity, key ranges, queries,
cursor increments through the command line, errors as one line."""

import json
import sqlite3

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline

from beam_etl.core.batches import visible
from beam_etl.io.sqliteio import ReadFromSqlite, WriteToSqlite
from beam_etl.run import main
from beam_etl.runner import LocalRunner

_FOUND: list = []


def _keep(batch: pa.RecordBatch) -> None:
    _FOUND.append(visible(batch))


def _read(**options) -> pa.Table:
    _FOUND.clear()
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    _ = p | ReadFromSqlite(**options) | beam.Map(_keep)
    p.run().wait_until_finish()
    batches = [b for b in _FOUND if b.num_rows]
    return pa.Table.from_batches(batches) if batches else pa.table({})


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT, amount REAL, "
            "paid BOOLEAN, raw BLOB, updated_at TEXT)"
        )
        connection.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
            [
                (i, f"n{i}", i * 1.5, i % 2, bytes([i]), f"2024-01-0{1 + i % 5} 10:00:00")
                for i in range(1, 21)
            ],
        )
    return str(path)


def test_a_table_reads_with_types_from_its_declared_columns(database):
    table = _read(database=database, table="orders").sort_by("id")
    assert table.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("amount", pa.float64()),
            ("paid", pa.bool_()),
            ("raw", pa.binary()),
            ("updated_at", pa.string()),
        ]
    )
    assert table.num_rows == 20
    assert table.slice(0, 1).to_pylist() == [
        {
            "id": 1,
            "name": "n1",
            "amount": 1.5,
            "paid": True,
            "raw": b"\x01",
            "updated_at": "2024-01-02 10:00:00",
        }
    ]


def test_key_ranges_read_every_row_once(database):
    table = _read(database=database, table="orders", partition_column="id", num_partitions=4)
    assert sorted(table.column("id").to_pylist()) == list(range(1, 21))


def test_a_query_with_expressions_takes_its_values_types(database):
    table = _read(
        database=database,
        query="SELECT paid, count(*) AS n, avg(amount) AS mean FROM orders GROUP BY paid",
    ).sort_by("paid")
    assert table.schema.field("n").type == pa.int64()
    assert table.schema.field("mean").type == pa.float64()
    assert table.column("n").to_pylist() == [10, 10]


def test_a_value_that_does_not_fit_its_declared_type_fails_naming_the_column(tmp_path):
    path = tmp_path / "bad.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (id INTEGER, v INTEGER)")
        connection.execute("INSERT INTO t VALUES (1, 'not a number')")
    with pytest.raises(Exception, match="Column `v` of `t` is declared int64"):
        _read(database=str(path), table="t")


def test_a_missing_database_is_an_error_not_a_new_file(tmp_path):
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(Exception, match="does not exist"):
        _read(database=str(missing), table="t")
    assert not missing.exists()
    with pytest.raises(ValueError, match="exactly one of `table` and `query`"):
        ReadFromSqlite(str(missing))


SPEC = """
name: sqlite_increments
sources:
  - name: orders
    type: ReadFromSqlite
    config:
      database: "{database}"
      table: orders
      incremental: {{cursor: id, lag: 2}}
sinks:
  - name: copy
    type: WriteToSqlite
    input: orders
    config: {{database: "{target}", table: orders, mode: merge, primary_key: id}}
"""


def test_cursor_increments_read_new_rows_once_and_the_copy_stays_equal(database, tmp_path):
    target = tmp_path / "copy.sqlite"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(database=database, target=target))
    out = tmp_path / "out"

    def run() -> int:
        assert main(["--pipeline", str(spec), "--output-dir", str(out)]) == 0
        report = json.loads((out / "run_report.json").read_text())
        return next(s["rows_in"] for s in report["steps"] if s["name"] == "orders")

    def same() -> bool:
        query = "SELECT id, name, amount FROM orders ORDER BY id"
        with sqlite3.connect(database) as a, sqlite3.connect(target) as b:
            return a.execute(query).fetchall() == b.execute(query).fetchall()

    assert run() == 20 and same()
    assert run() == 0 and same()  # the lag window's rows were loaded: not read twice
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO orders (id, name, amount) VALUES (21, 'new', 1.0)")
        connection.execute("UPDATE orders SET name = 'changed' WHERE id = 20")
    assert run() == 2 and same()  # the new row, and the changed one inside the lag


def test_round_trip_through_write_to_sqlite(tmp_path):
    path = tmp_path / "rt.sqlite"
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    batch = pa.record_batch({"id": [1, 2], "v": ["a", None]})
    _ = p | beam.Create([batch]) | WriteToSqlite(str(path), "t")
    p.run().wait_until_finish()
    table = _read(database=str(path), table="t").sort_by("id")
    assert table.to_pylist() == [{"id": 1, "v": "a"}, {"id": 2, "v": None}]
