"""WriteToSqlite's keyed modes (`merge`, `insert_only`) on real SQLite files."""

import sqlite3

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.io._files import discard_staging
from beam_etl.io.sqliteio import WriteToSqlite
from beam_etl.runner import LocalRunner


def _write(path, rows, **options) -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("gone", pa.bool_())])
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    sink = WriteToSqlite(str(path), "t", **options)
    _ = p | beam.Create([pa.RecordBatch.from_pylist(rows, schema=schema)]) | sink
    try:
        p.run().wait_until_finish()
    finally:
        discard_staging([sink])


def _rows(path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, v FROM t ORDER BY id").fetchall()


def test_merge_upserts_by_key_the_last_row_wins_and_the_flag_deletes(tmp_path):
    db = tmp_path / "m.sqlite"
    options = {"mode": "merge", "primary_key": "id", "hard_delete_column": "gone"}
    _write(db, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], **options)
    _write(
        db,
        [
            {"id": 2, "v": "b1"},
            {"id": 2, "v": "b2"},
            {"id": 3, "v": "c"},
            {"id": 1, "v": None, "gone": True},
        ],
        **options,
    )
    assert _rows(db) == [(2, "b2"), (3, "c")]
    with sqlite3.connect(db) as connection:
        columns = [c[1] for c in connection.execute("PRAGMA table_info(t)")]
        keys = [c[1] for c in connection.execute("PRAGMA table_info(t)") if c[5]]
    assert columns == ["id", "v"] and keys == ["id"]  # the flag is not stored


def test_insert_only_keeps_existing_keys_and_the_first_new_row(tmp_path):
    db = tmp_path / "i.sqlite"
    _write(db, [{"id": 1, "v": "a"}], mode="insert_only", primary_key="id")
    _write(
        db,
        [{"id": 1, "v": "new"}, {"id": 2, "v": "first"}, {"id": 2, "v": "second"}],
        mode="insert_only",
        primary_key="id",
    )
    assert _rows(db) == [(1, "a"), (2, "first")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "merge"}, "needs `primary_key`"),
        ({"mode": "append", "hard_delete_column": "gone"}, "applies to mode `merge` only"),
        ({"mode": "merge", "primary_key": "id; drop"}, "primary_key column"),
    ],
)
def test_keyed_mode_arguments_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        WriteToSqlite("x.sqlite", "t", **options)


def _refusing_table(db) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        connection.execute("INSERT INTO t VALUES (1, 'a')")


@pytest.mark.parametrize("mode", ["append", "merge", "insert_only"])
def test_a_refused_row_is_a_dead_letter_with_on_reject_dead_letter(tmp_path, mode):
    """One bad value costs one row: SQLite refuses `v` null (NOT NULL); the others load and
    the refused row leaves through `error` with its reason and origin."""
    db = tmp_path / "r.sqlite"
    _refusing_table(db)
    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    batch = pa.RecordBatch.from_pylist(
        [{"id": 2, "v": "b"}, {"id": 3, "v": None}, {"id": 4, "v": "d"}], schema=schema
    )
    keys = {} if mode == "append" else {"primary_key": "id"}
    sink = WriteToSqlite(str(db), "t", mode=mode, on_reject="dead_letter", **keys)
    assert sink.OUTPUTS == ("error",)
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    result = p | beam.Create([batch]) | sink
    refused = result.error | beam.Map(lambda letter: (letter.reason, letter.payload["id"]))
    assert_that(refused, equal_to([("db_constraint", 3)]))
    try:
        p.run().wait_until_finish()
    finally:
        discard_staging([sink])
    assert _rows(db) == [(1, "a"), (2, "b"), (4, "d")]


def test_a_refused_row_fails_the_run_and_publishes_nothing_by_default(tmp_path):
    db = tmp_path / "f.sqlite"
    _refusing_table(db)
    with pytest.raises(Exception, match="NOT NULL"):
        _write(db, [{"id": 2, "v": "b"}, {"id": 3, "v": None}], mode="append")
    assert _rows(db) == [(1, "a")]
    assert WriteToSqlite(str(db), "t").OUTPUTS == ()


def test_a_deferred_sink_makes_no_database_file_before_the_verdict(tmp_path):
    """The trial before the verdict changes nothing: a database file not there yet is not
    made (a run refused after it leaves no file behind); the publish after it makes it."""
    from beam_etl.core.publish import deferred_publishing, discard, publish_all

    db, pending = tmp_path / "new" / "d.sqlite", str(tmp_path / "pending")
    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    with deferred_publishing(pending):
        sink = WriteToSqlite(str(db), "t", mode="merge", primary_key="id")
        _ = p | beam.Create([pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}], schema)]) | sink
    p.run().wait_until_finish()
    assert not db.exists()  # (its folder holds the staged parts beside it)
    publish_all(pending)
    assert _rows(db) == [(1, "a")]
    discard(pending)


@pytest.mark.parametrize("mode", ["merge", "insert_only", "scd2"])
def test_a_null_key_is_refused_as_in_the_other_databases(tmp_path, mode):
    """SQLite's PRIMARY KEY alone takes nulls (an INTEGER key would even be given a made-up
    rowid): a table the load creates declares its keys NOT NULL, so a null key is a refused
    row (a dead letter here), never a row loaded twice or under an invented key."""
    db = tmp_path / "n.sqlite"
    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    batch = pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}, {"id": None, "v": "b"}], schema)
    for _ in range(2):  # a re-run adds nothing
        p = test_pipeline.TestPipeline(runner=LocalRunner())
        sink = WriteToSqlite(
            str(db), "t", mode=mode, primary_key="id", on_reject="dead_letter", run_id=None
        )
        result = p | beam.Create([batch]) | sink
        refused = result.error | beam.Map(lambda letter: letter.payload["v"])
        assert_that(refused, equal_to(["b"]))
        try:
            p.run().wait_until_finish()
        finally:
            discard_staging([sink])
    with sqlite3.connect(db) as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM t")]
    assert ids == [1]


@pytest.mark.parametrize(
    "drift, columns, failure",
    [
        ("evolve", ["id", "v", "gone", "extra"], None),
        ("discard_columns", ["id", "v", "gone"], None),
        ("freeze", ["id", "v", "gone"], "extra"),
    ],
)
def test_schema_drift_policies(tmp_path, drift, columns, failure):
    db = tmp_path / "d.sqlite"
    _write(db, [{"id": 1, "v": "a"}], mode="append")
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("extra", pa.int64())])
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    sink = WriteToSqlite(str(db), "t", mode="append", schema_drift=drift)
    batch = pa.RecordBatch.from_pylist([{"id": 2, "v": "b", "extra": 7}], schema=schema)
    _ = p | beam.Create([batch]) | sink
    try:
        if failure:
            with pytest.raises(Exception, match=failure):
                p.run().wait_until_finish()
        else:
            p.run().wait_until_finish()
    finally:
        discard_staging([sink])
    with sqlite3.connect(db) as connection:
        assert [c[1] for c in connection.execute("PRAGMA table_info(t)")] == columns
    assert _rows(db) == ([(1, "a")] if failure else [(1, "a"), (2, "b")])
