"""`scd2` mode of the database sinks against real servers (and SQLite): five loads of a
changing source, then "what did key K look like at time T" answered from the history table."""

import datetime
import sqlite3
import time

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from dbfixtures import my, pg, unique_table

from beam_etl.core.batches import with_origin
from beam_etl.io._files import discard_staging
from beam_etl.io.mysqlio import WriteToMySql
from beam_etl.io.postgresio import WriteToPostgres
from beam_etl.io.sqliteio import WriteToSqlite
from beam_etl.runner import LocalRunner

_RESULTS: dict[str, list] = {}


def _collect(name, value):
    _RESULTS.setdefault(name, []).append(value)


class Db:
    """One target: how to write to it and how to query it back."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind = kind
        self.table = unique_table(f"scd2_{kind}")
        self.path = str(tmp_path / "target.sqlite")

    def sink(self, **options):
        if self.kind == "postgres":
            return WriteToPostgres(self.table, database="test", **options)
        if self.kind == "mysql":
            return WriteToMySql(self.table, database="test", **options)
        return WriteToSqlite(self.path, self.table, **options)

    def query(self, sql: str, params=()) -> list[tuple]:
        sql = sql.replace("{t}", self._quoted())
        if self.kind == "postgres":
            return pg(sql, params)
        if self.kind == "mysql":
            return my(sql.replace('"', "`"), params)
        with sqlite3.connect(self.path) as connection:
            return connection.execute(sql.replace("%s", "?"), params).fetchall()

    def _quoted(self) -> str:
        return f'"{self.table}"'

    def drop(self) -> None:
        if self.kind == "postgres":
            pg(f'DROP TABLE IF EXISTS "{self.table}"')
            pg('DELETE FROM "_beam_etl_runs" WHERE target = %s', (self.table,))
        elif self.kind == "mysql":
            my(f"DROP TABLE IF EXISTS `{self.table}`")
            my("DELETE FROM `_beam_etl_runs` WHERE target = %s", (self.table,))


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def db(request, tmp_path):
    target = Db(request.param, tmp_path)
    yield target
    target.drop()


def _load(db: Db, rows: list[dict], **options) -> tuple[list, list]:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("amount", pa.float64()),
            ("deleted", pa.bool_()),
        ]
    )
    batch = with_origin(
        pa.RecordBatch.from_pylist(rows, schema=schema), "in.csv", list(range(2, 2 + len(rows)))
    )
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    sink = db.sink(mode="scd2", primary_key="id", hard_delete_column="deleted", **options)
    result = p | beam.Create([batch]) | sink
    written, errors = result if isinstance(result, tuple) else (result, None)
    _ = written | "W" >> beam.Map(lambda n: _collect("written", n))
    if errors is not None:  # WriteToSqlite gives the rows written alone
        _ = errors | "E" >> beam.Map(lambda letter: _collect("errors", letter))
    _RESULTS.clear()
    try:
        p.run().wait_until_finish()
    finally:
        discard_staging([sink])
    return _RESULTS.get("written", []), _RESULTS.get("errors", [])


def _row(i, name, amount, deleted=False):
    return {"id": i, "name": name, "amount": amount, "deleted": deleted}


def _now() -> datetime.datetime:
    time.sleep(0.01)  # versions of consecutive loads never share a timestamp
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _as_of(db: Db, key: int, at: datetime.datetime) -> list[tuple]:
    stamp = at.strftime("%Y-%m-%d %H:%M:%S.%f")
    return db.query(
        'SELECT "name", "amount" FROM {t} WHERE "id" = %s AND "valid_from" <= %s '
        'AND ("valid_to" IS NULL OR "valid_to" > %s)',
        (key, stamp, stamp),
    )


def test_five_loads_keep_every_version_and_answer_as_of_queries(db):
    loads = [
        [_row(1, "ann", 10.0), _row(2, "bob", 20.0), _row(3, "cy", 30.0)],
        [_row(1, "ann", 11.0), _row(2, "bob", 20.0), _row(3, "cy", 30.0)],  # 1 changes
        [_row(1, "ann", 11.0), _row(3, "cy", 30.0, deleted=True), _row(4, "dee", 40.0)],
        [_row(1, "ann", 11.0), _row(2, "bobby", 21.0), _row(3, "cy", 33.0)],  # 3 comes back
        [_row(1, "ann", 11.0), _row(2, "bobby", 21.0), _row(3, "cy", 33.0)],  # no change
    ]
    written_per_load = [3, 1, 1, 2, 0]
    moments = [_now()]
    for rows, expected in zip(loads, written_per_load):
        written, letters = _load(db, rows)
        assert letters == []
        assert written == [expected]
        moments.append(_now())
    # before the first load: nothing; after each load: that load's picture
    assert _as_of(db, 1, moments[0]) == []
    assert _as_of(db, 1, moments[1]) == [("ann", 10.0)]
    assert _as_of(db, 1, moments[2]) == [("ann", 11.0)]
    assert _as_of(db, 1, moments[5]) == [("ann", 11.0)]
    assert _as_of(db, 2, moments[3]) == [("bob", 20.0)]  # absent from load 3, not deleted
    assert _as_of(db, 2, moments[4]) == [("bobby", 21.0)]
    assert _as_of(db, 3, moments[2]) == [("cy", 30.0)]
    assert _as_of(db, 3, moments[3]) == []  # deleted by load 3
    assert _as_of(db, 3, moments[4]) == [("cy", 33.0)]
    assert _as_of(db, 4, moments[2]) == []
    assert _as_of(db, 4, moments[5]) == [("dee", 40.0)]
    versions = db.query('SELECT "id", count(*) FROM {t} GROUP BY "id" ORDER BY "id"')
    assert [tuple(v) for v in versions] == [(1, 2), (2, 2), (3, 2), (4, 1)]
    current = db.query('SELECT "id" FROM {t} WHERE "is_current" = %s ORDER BY "id"', (True,))
    assert [c[0] for c in current] == [1, 2, 3, 4]
    open_ended = db.query('SELECT count(*) FROM {t} WHERE "valid_to" IS NULL')
    assert open_ended[0][0] == 4  # one open version per live key


def test_a_key_repeated_in_one_load_keeps_its_last_row(db):
    written, _ = _load(db, [_row(7, "first", 1.0), _row(7, "last", 2.0)])
    assert written == [1]
    assert db.query('SELECT "name" FROM {t}') == [("last",)]


def test_scd2_columns_in_the_input_are_refused(db):
    with pytest.raises(Exception, match="kept by mode `scd2`"):
        schema = pa.schema([("id", pa.int64()), ("valid_from", pa.string())])
        p = test_pipeline.TestPipeline(runner=LocalRunner())
        batch = pa.RecordBatch.from_pylist([{"id": 1, "valid_from": "x"}], schema=schema)
        sink = db.sink(mode="scd2", primary_key="id")
        _ = p | beam.Create([batch]) | sink
        try:
            p.run().wait_until_finish()
        finally:
            discard_staging([sink])


def _parquet_load(path, rows, run_id=None):
    from beam_etl.io.parquetio import WriteToParquet

    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("amount", pa.float64()),
            ("deleted", pa.bool_()),
        ]
    )
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    sink = WriteToParquet(
        str(path), mode="scd2", primary_key="id", hard_delete_column="deleted", run_id=run_id
    )
    _ = p | beam.Create([pa.RecordBatch.from_pylist(rows, schema=schema)]) | sink
    try:
        p.run().wait_until_finish()
    finally:
        discard_staging([sink])


def test_parquet_history_keeps_a_version_per_run_and_answers_as_of_queries(tmp_path):
    from beam_etl.io import parquet_history

    path = tmp_path / "customers"
    loads = [
        [_row(1, "ann", 10.0), _row(2, "bob", 20.0), _row(3, "cy", 30.0)],
        [_row(1, "ann", 11.0), _row(2, "bob", 20.0), _row(3, "cy", 30.0)],
        [_row(1, "ann", 11.0), _row(3, "cy", 30.0, deleted=True), _row(4, "dee", 40.0)],
        [_row(1, "ann", 11.0), _row(2, "bobby", 21.0), _row(3, "cy", 33.0)],
        [_row(1, "ann", 11.0), _row(2, "bobby", 21.0), _row(3, "cy", 33.0)],
    ]
    moments = [_now()]
    for rows in loads:
        _parquet_load(path, rows)
        moments.append(_now())
    files = sorted(p.name for p in path.iterdir() if p.name.startswith("v-"))
    assert len(files) == 4  # the fifth load changed nothing: no version

    def as_of(key, at):
        view = parquet_history(str(path), at)
        return (
            [(r["name"], r["amount"]) for r in view.to_pylist() if r["id"] == key]
            if view is not None
            else []
        )

    assert as_of(1, moments[0]) == []
    assert as_of(1, moments[1]) == [("ann", 10.0)]
    assert as_of(1, moments[2]) == [("ann", 11.0)]
    assert as_of(2, moments[3]) == [("bob", 20.0)]
    assert as_of(2, moments[4]) == [("bobby", 21.0)]
    assert as_of(3, moments[2]) == [("cy", 30.0)]
    assert as_of(3, moments[3]) == []
    assert as_of(3, moments[4]) == [("cy", 33.0)]
    assert as_of(4, moments[5]) == [("dee", 40.0)]
    current = parquet_history(str(path))
    assert sorted(current.column("id").to_pylist()) == [1, 2, 3, 4]
    assert all(current.column("is_current").to_pylist())


def test_parquet_history_publishes_a_run_id_once(tmp_path):
    path = tmp_path / "h"
    _parquet_load(path, [_row(1, "a", 1.0)], run_id="run-1")
    _parquet_load(path, [_row(1, "b", 2.0)], run_id="run-1")  # a re-publish: nothing
    assert len([p for p in path.iterdir() if p.name.startswith("v-")]) == 1
