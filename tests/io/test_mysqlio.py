"""MySQL/MariaDB source and sink against the real server: every mode, idempotent re-runs,
atomic publishing, refused rows as dead letters, type round trips, partitioned reads, secrets."""

import dataclasses
import datetime
import decimal
import logging
import os
import threading
import time
import zlib

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from dbfixtures import my, my_connect, unique_table

from beam_etl.core.batches import visible, with_origin
from beam_etl.core.errors import ConnectorError
from beam_etl.io._files import discard_staging
from beam_etl.io.mysqlio import ReadFromMySql, WriteToMySql, connect, is_transient
from beam_etl.runner import LocalRunner

DB = {"database": "test"}
UTC = datetime.UTC
D = decimal.Decimal
STAMP = datetime.datetime(2024, 5, 1, 10, 30)


@pytest.fixture
def table():
    name = unique_table("my")
    yield name
    my(f"DROP TABLE IF EXISTS `{name}`")
    my("DELETE FROM `_beam_etl_runs` WHERE target = %s", (name,))


def _batch(ids, names=None, **extra):
    columns = {"id": pa.array(ids, pa.int64()), "name": pa.array(names or [f"n{i}" for i in ids])}
    columns.update(extra)
    return pa.record_batch(columns)


_RESULTS: dict[str, list] = {}


def _collect(name, value):
    _RESULTS.setdefault(name, []).append(value)


def _write(batches, table, *, origin="in.csv", **options):
    """Run a pipeline writing `batches`; return (rows written, dead letters by line)."""
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    marked = [with_origin(b, origin, list(range(2, 2 + b.num_rows))) for b in batches]
    sink = WriteToMySql(table, **DB, **options)
    written, errors = p | beam.Create(marked) | sink
    _ = written | "W" >> beam.Map(lambda n: _collect("written", n))
    _ = errors | "E" >> beam.Map(lambda letter: _collect("errors", letter))
    _RESULTS.clear()
    try:
        p.run().wait_until_finish()
    finally:
        discard_staging([sink])  # what the CLI does after a failed run (a no-op after success)
    letters = sorted(_RESULTS.get("errors", []), key=lambda letter: letter.line or 0)
    return _RESULTS.get("written", []), letters


def _rows(table):
    return [tuple(row) for row in my(f"SELECT * FROM `{table}` ORDER BY id")]


@pytest.mark.parametrize("load_method", ["load_data", "insert"])
def test_append_creates_the_table_and_appends_on_the_next_run(table, load_method):
    options = {"load_method": load_method}
    assert _write([_batch([1, 2]), _batch([3])], table, primary_key="id", **options) == ([3], [])
    assert _write([_batch([4], ['quote " back\\slash\nnew line'])], table, **options) == ([1], [])
    assert _rows(table) == [(1, "n1"), (2, "n2"), (3, "n3"), (4, 'quote " back\\slash\nnew line')]
    assert my(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = "
        "DATABASE() AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY'",
        (table,),
    ) == [("id",)]


@pytest.mark.parametrize("mode", ["append", "replace", "merge", "insert_only"])
def test_rerun_of_a_published_run_id_changes_nothing(table, mode):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name text)")
    options = {"mode": mode, "primary_key": "id", "run_id": f"run-{mode}"}
    _write([_batch([1, 2])], table, **options)
    my(f"UPDATE `{table}` SET name = 'changed' WHERE id = 1")
    assert _write([_batch([1, 2, 3])], table, **options) == ([2], [])
    assert _rows(table) == [(1, "changed"), (2, "n2")]
    assert my("SELECT rows_written FROM `_beam_etl_runs` WHERE target = %s", (table,)) == [(2,)]


def test_replace_swaps_in_new_content_and_a_concurrent_reader_sees_old_or_new(table):
    _write([_batch(list(range(1000)))], table, mode="replace", primary_key="id")
    counts, stop = set(), threading.Event()

    def poll():
        while not stop.is_set():
            counts.add(my(f"SELECT count(*) FROM `{table}`")[0][0])
            time.sleep(0.002)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        batches = [_batch(list(range(i, i + 500))) for i in range(0, 3000, 500)]
        _write(batches, table, mode="replace")
    finally:
        stop.set()
        reader.join()
    assert counts <= {1000, 3000} and 1000 in counts
    assert my(f"SELECT count(*), sum(id) FROM `{table}`") == [(3000, sum(range(3000)))]
    assert my("SHOW TABLES LIKE '\\_beam\\_etl\\_new%%'") == []


def test_merge_updates_inserts_deletes_and_keeps_the_row_named_by_dedup_sort(table):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name text, version int)")
    my(f"INSERT INTO `{table}` VALUES (1, 'old1', 0), (2, 'old2', 0), (3, 'old3', 0)")
    load = pa.record_batch(
        {
            "id": pa.array([2, 2, 2, 3, 4, 5, 5], pa.int64()),
            "name": ["v7", "v9", "v8", "gone", "new4", "new5", "dead5"],
            "version": pa.array([7, 9, 8, 1, 1, 1, 2], pa.int32()),
            "deleted": [False, False, False, True, None, False, True],
        }
    )
    options = {"primary_key": ["id"], "dedup_sort": "version", "hard_delete_column": "deleted"}
    assert _write([load], table, mode="merge", **options) == ([4], [])
    assert _rows(table) == [(1, "old1", 0), (2, "v9", 9), (4, "new4", 1)]


def test_merge_without_dedup_sort_keeps_the_last_staged_row(table):
    _write([_batch([1, 1], ["first", "second"])], table, mode="merge", primary_key="id")
    assert _rows(table) == [(1, "second")]


def test_insert_only_skips_existing_keys(table):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name text)")
    my(f"INSERT INTO `{table}` VALUES (1, 'kept')")
    assert _write([_batch([1, 2])], table, mode="insert_only", primary_key="id") == ([1], [])
    assert _rows(table) == [(1, "kept"), (2, "n2")]


def test_failure_before_publish_leaves_the_target_as_it_was(table):
    _write([_batch([1])], table)

    def explode(batch):
        raise RuntimeError("boom")

    p = test_pipeline.TestPipeline(runner=LocalRunner())
    batches = p | beam.Create([_batch([2]), _batch([3])])
    sink = WriteToMySql(table, **DB)
    _ = batches | "Write" >> sink
    _ = batches | "Other" >> beam.Map(explode)
    with pytest.raises(Exception, match="boom"):
        p.run().wait_until_finish()
    discard_staging([sink])  # what the CLI does after a failed run
    assert _rows(table) == [(1, "n1")]
    assert not os.path.exists(sink.staging)


@pytest.mark.parametrize(
    ("mode", "bad", "message"),
    [
        ("append", {"name": None}, "Column 'name' cannot be null"),
        ("append", {"amount": decimal.Decimal("-1.00")}, "CONSTRAINT `{t}_amount` failed"),
        ("append", {"amount": decimal.Decimal("123456.00")}, "Out of range value for column"),
        ("append", {"id": 1}, "Duplicate entry '1' for key 'PRIMARY'"),
        ("merge", {"name": None}, "Column 'name' cannot be null"),
        ("replace", {"amount": decimal.Decimal("-1.00")}, "CONSTRAINT `{t}_amount` failed"),
    ],
    ids=["not-null", "check", "out-of-range", "duplicate-key", "merge-not-null", "replace-check"],
)
def test_refused_rows_become_dead_letters_and_the_rest_is_written(table, mode, bad, message):
    my(
        f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(20) NOT NULL, "
        f"amount decimal(6,2), CONSTRAINT `{table}_amount` CHECK (amount >= 0))"
    )
    rows = [{"id": i, "name": f"n{i}", "amount": decimal.Decimal("1.00")} for i in range(1, 9)]
    rows[5] = {**rows[5], **bad}
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(8, 2))])
    batch = pa.RecordBatch.from_pylist(rows, schema)
    written, errors = _write([batch], table, mode=mode, primary_key="id")
    assert written == [7]
    assert [(e.reason, e.source, e.line, e.key) for e in errors] == [
        ("db_constraint", "in.csv", 7, str(rows[5]["id"]))
    ]
    assert message.format(t=table) in errors[0].message
    expected = {k: (str(v) if isinstance(v, decimal.Decimal) else v) for k, v in rows[5].items()}
    assert errors[0].payload == expected
    assert len(_rows(table)) == 7


def test_on_reject_fail_fails_the_run_and_publishes_nothing(table):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name text NOT NULL)")
    with pytest.raises(Exception, match=r"refused 1 row\(s\).*in.csv:3: Column 'name'"):
        _write([_batch([1, 2], ["a", None])], table, on_reject="fail")
    assert _rows(table) == []


def test_schema_drift_evolve_freeze_and_discard_columns(table):
    _write([_batch([1])], table)
    with pytest.raises(Exception, match=r"frozen.*`extra` \(double\)"):
        _write([_batch([2], extra=pa.array([2.5]))], table, schema_drift="freeze")
    _write([_batch([3], other=pa.array([1]))], table, schema_drift="discard_columns")
    _write([_batch([4], extra=pa.array([2.5]))], table)
    assert _rows(table) == [(1, "n1", None), (3, "n3", None), (4, "n4", 2.5)]


ROUND_TRIP = pa.record_batch(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "small": pa.array([-32768, None, 7], pa.int16()),
        "medium": pa.array([2**31 - 1, None, 0], pa.int32()),
        "unsigned": pa.array([2**64 - 1, None, 0], pa.uint64()),
        "double": pa.array([1e300, None, 0.1], pa.float64()),
        "amount": pa.array(
            [decimal.Decimal("12345678.901"), None, decimal.Decimal("-0.001")],
            pa.decimal128(11, 3),
        ),
        "text": pa.array(["Grüße 東京 😀 \\N", None, ""]),
        "flag": pa.array([True, None, False]),
        "day": pa.array([datetime.date(1999, 12, 31), None, datetime.date(2024, 2, 29)]),
        "local": pa.array(
            [datetime.datetime(2024, 6, 1, 8), None, datetime.datetime(2000, 1, 1, 0, 0, 0, 1)],
            pa.timestamp("us"),
        ),
        "blob": pa.array([b"\x00\x01\xff", None, b""], pa.binary()),
    }
)


@pytest.mark.parametrize("load_method", ["load_data", "insert"])
def test_round_trip_keeps_every_mapped_type_and_nulls(table, pipeline, load_method):
    _write([ROUND_TRIP], table, mode="replace", primary_key="id", load_method=load_method)
    read = pipeline | ReadFromMySql(table=table, **DB)
    rows = read | beam.FlatMap(lambda b: visible(b).to_pylist())
    assert_that(rows, equal_to(ROUND_TRIP.to_pylist()), label="RoundTrip")
    assert_that(
        read | beam.Map(lambda b: visible(b).schema), equal_to([ROUND_TRIP.schema]), label="Types"
    )
    pipeline.run().wait_until_finish()


def test_tz_aware_timestamps_are_stored_in_utc_and_json_read_as_text(table, pipeline):
    at = datetime.datetime(
        2024, 1, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    batch = pa.record_batch(
        {
            "id": pa.array([1, 2], pa.int64()),
            "at": pa.array([at, None], pa.timestamp("us", "Europe/Berlin")),
        }
    )
    _write([batch], table)
    my(f"ALTER TABLE `{table}` ADD COLUMN doc json")
    my(f"UPDATE `{table}` SET doc = '{{\"a\": [1, 2]}}' WHERE id = 1")
    rows = (
        pipeline | ReadFromMySql(table=table, **DB) | beam.FlatMap(lambda b: visible(b).to_pylist())
    )
    expected = [
        {"id": 1, "at": datetime.datetime(2024, 1, 1, 10, 30), "doc": '{"a": [1, 2]}'},
        {"id": 2, "at": None, "doc": None},
    ]
    assert_that(rows, equal_to(expected), label="UtcAndJson")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    "bounds", [{}, {"lower_bound": 100, "upper_bound": 900}], ids=["queried", "narrow"]
)
def test_partitioned_read_returns_every_row_exactly_once(table, pipeline, bounds):
    my(f"CREATE TABLE `{table}` (id int, payload varchar(40))")
    my(f"INSERT INTO `{table}` SELECT CAST(seq AS SIGNED) - 5, md5(seq) FROM seq_0_to_2005")
    my(f"INSERT INTO `{table}` VALUES (NULL, 'null key'), (NULL, 'another')")
    expected = [tuple(r) for r in my(f"SELECT id, payload FROM `{table}`")]
    batches = pipeline | ReadFromMySql(
        table=table, **DB, partition_column="id", num_partitions=4, batch_rows=300, **bounds
    )
    rows = batches | beam.FlatMap(lambda b: [(r["id"], r["payload"]) for r in b.to_pylist()])
    summary = rows | beam.Map(lambda r: (1, _checksum(r))) | beam.CombineGlobally(_add_pairs)
    assert_that(summary, equal_to([(len(expected), sum(map(_checksum, expected)))]), label="Sum")
    sizes = batches | beam.Map(lambda b: b.num_rows <= 300)
    assert_that(sizes | beam.Distinct(), equal_to([True]), label="BatchesAtMostBatchRows")
    pipeline.run().wait_until_finish()


def test_a_table_with_an_integer_key_is_split_by_default(table, pipeline, monkeypatch):
    from beam_etl.io.sql import read as _dbread

    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, payload varchar(40))")
    my(f"INSERT INTO `{table}` SELECT seq, md5(seq) FROM seq_1_to_1000")
    my(f"ANALYZE TABLE `{table}`")  # the row estimate the split is sized by
    monkeypatch.setattr(_dbread, "AUTO_RANGE_ROWS", 100)
    source = ReadFromMySql(table=table, **DB)

    def plan(read):
        fn = _dbread.PlanRangesFn(
            read.DIALECT, read.config, read.query, read.partition_column,
            read.num_partitions or 1, *read.bounds, split_table=read.split_table,
        )  # fmt: skip
        return list(fn.process(None))

    ranges = plan(source)
    assert 5 <= len(ranges) <= 16 and {r[2] for r in ranges} == {"id"}
    assert plan(ReadFromMySql(table=table, **DB, num_partitions=1)) == [(None, None, None)]
    assert plan(ReadFromMySql(query=f"SELECT * FROM `{table}`", **DB)) == [(None, None, None)]
    other = f"{table}_c"
    my(f"CREATE TABLE `{other}` (a int, b int, PRIMARY KEY (a, b))")
    try:  # a composite key, or none: read whole
        assert plan(ReadFromMySql(table=other, **DB)) == [(None, None, None)]
    finally:
        my(f"DROP TABLE `{other}`")
    rows = pipeline | source | beam.FlatMap(lambda b: b.column("id").to_pylist())
    assert_that(rows, equal_to(list(range(1, 1001))))
    pipeline.run().wait_until_finish()


def _checksum(row) -> int:
    return zlib.crc32(repr(row).encode())


def _add_pairs(pairs) -> tuple[int, int]:
    pairs = list(pairs)
    return (sum(p[0] for p in pairs), sum(p[1] for p in pairs))


def test_password_never_appears_in_repr_errors_or_logs(monkeypatch, caplog):
    password = "s3cr3t-Pa55"
    monkeypatch.setenv("MYSQL_PASSWORD", password)
    sink = WriteToMySql("t", database="test", port=1)
    assert sink.config.password.reveal() == password
    assert password not in repr(sink.config) and password not in str(vars(sink))
    caplog.set_level(logging.DEBUG)
    fast = dataclasses.replace(sink.config, retries=1, retry_delay=0.01, connect_timeout=2)
    with pytest.raises(ConnectorError) as raised:
        connect(fast)
    assert "Connecting failed after retries on `mysql://root@127.0.0.1:1/test`" in str(raised.value)
    assert "retry 1 of 1" in caplog.text
    assert password not in str(raised.value) + caplog.text


def test_errors_fail_fast_unless_transient(pipeline):
    import pymysql

    assert is_transient(pymysql.err.OperationalError(1213, "Deadlock found"))
    assert is_transient(pymysql.err.OperationalError(2013, "Lost connection"))
    assert not is_transient(pymysql.err.ProgrammingError(1146, "Table doesn't exist"))
    _ = pipeline | ReadFromMySql(table="no_such_table_here", **DB)
    with pytest.raises(Exception, match=r"Reading `no_such_table_here`.*ProgrammingError.*1146"):
        pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "upsert"}, "Unknown mode `upsert`"),
        ({"mode": "insert_only"}, "mode `insert_only` needs `primary_key`"),
        ({"hard_delete_column": "gone"}, "`hard_delete_column` applies to mode `merge` only"),
        ({"load_method": "bcp"}, "Unknown load_method `bcp`"),
        ({"connect_timeout": -1}, "`connect_timeout` must be positive"),
    ],
    ids=["mode", "insert-only-without-key", "hard-delete-without-merge", "load-method", "timeout"],
)
def test_invalid_sink_arguments_are_refused_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        WriteToMySql("t", **{**DB, **options})


def test_partitioned_query_keeps_its_own_percent_signs(table, pipeline):
    my(f"CREATE TABLE `{table}` (id int, payload text)")
    my(f"INSERT INTO `{table}` VALUES (1, 'a%'), (2, 'b'), (3, 'c%'), (4, 'a%')")
    query = f"SELECT id FROM `{table}` WHERE payload LIKE '%\\%'"
    ids = (
        pipeline
        | ReadFromMySql(query=query, partition_column="id", num_partitions=2, **DB)
        | beam.FlatMap(lambda b: b.column("id").to_pylist())
    )
    assert_that(ids, equal_to([1, 3, 4]), label="Ids")
    pipeline.run().wait_until_finish()


def test_statement_timeout_stops_long_statements(pipeline):
    _ = pipeline | ReadFromMySql(query="SELECT SLEEP(3) AS s", statement_timeout=0.2, **DB)
    with pytest.raises(Exception, match="max_statement_time exceeded"):
        pipeline.run().wait_until_finish()


def test_merge_never_updates_another_row_through_a_second_unique_key(table):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(20) UNIQUE)")
    written, errors = _write(
        [_batch([1, 2, 3], ["a", "b", "a"])], table, mode="merge", primary_key="id"
    )
    assert written == [2]
    assert [(e.reason, e.line, e.key, e.message) for e in errors] == [
        ("db_constraint", 4, "3", "Duplicate entry 'a' for key 'name'")
    ]
    assert _rows(table) == [(1, "a"), (2, "b")]
    written, errors = _write([_batch([2, 4], ["a", "d"])], table, mode="merge", primary_key="id")
    assert (written, [e.key for e in errors]) == ([1], ["2"])
    assert _rows(table) == [(1, "a"), (2, "b"), (4, "d")]


CHANGED = {
    "trailing-spaces": ("x varchar(5)", pa.array(["ok", "abc       ", "fine"]), "Data too long"),
    "decimal-rounded": (
        "x decimal(6,2)",
        pa.array([D("1.10"), D("1.005"), D("2.000")], pa.decimal128(8, 3)),
        "value `1.005` of column `x` does not fit decimal(6,2) without rounding",
    ),
    "seconds-rounded": (
        "x datetime",
        pa.array([STAMP, STAMP.replace(microsecond=1), STAMP], pa.timestamp("us")),
        "would be rounded to datetime",
    ),
    "not-whole": ("x int", pa.array([1.0, 2.5, 3.0]), "value `2.5` of column `x` is not whole"),
    "nan": ("x double", pa.array([1.0, float("nan"), 3.0]), "MySQL cannot store NaN"),
    "not-utf8": (
        "x text",
        pa.array([b"ok", b"\xff", b"fine"], pa.binary()).view(pa.string()),
        "not valid UTF-8",
    ),
}


@pytest.mark.parametrize("mode", ["append", "merge", "insert_only", "replace"])
@pytest.mark.parametrize("case", list(CHANGED))
def test_a_value_mysql_would_change_is_refused_in_every_mode(table, mode, case):
    column, values, message = CHANGED[case]
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, {column})")
    load = pa.record_batch({"id": pa.array([1, 2, 3], pa.int64()), "x": values})
    written, errors = _write([load], table, mode=mode, primary_key="id")
    assert written == [2]
    assert [(e.reason, e.line, e.key) for e in errors] == [("db_constraint", 3, "2")]
    assert message in errors[0].message
    assert [r[0] for r in _rows(table)] == [1, 3]


@pytest.mark.parametrize("load_method", ["load_data", "insert"])
@pytest.mark.parametrize("mode", ["append", "merge"])
def test_zoned_timestamps_are_stored_as_utc_in_every_path(table, load_method, mode):
    instants = [
        datetime.datetime(2024, 1, 15, 23, 30, tzinfo=UTC),
        datetime.datetime(2024, 7, 15, 23, 30, 0, 250, tzinfo=UTC),
        datetime.datetime(1999, 12, 31, 22, 0, tzinfo=UTC),
    ]
    zones = ["Europe/Berlin", "America/New_York", "Asia/Kolkata"]
    columns = {"id": pa.array([1, 2, 3], pa.int64())}
    for i, zone in enumerate(zones):
        columns[f"at{i}"] = pa.array(instants, pa.timestamp("us", "UTC")).cast(
            pa.timestamp("us", zone)
        )
    options = {"mode": mode, "primary_key": "id", "load_method": load_method}
    assert _write([pa.record_batch(columns)], table, **options) == ([3], [])
    naive = [t.replace(tzinfo=None) for t in instants]
    assert _rows(table) == [(i + 1, t, t, t) for i, t in enumerate(naive)]


def test_errors_of_a_killed_or_closed_connection_are_transient():
    import pymysql

    victim, killer = connect(_fast_config()), connect(_fast_config())
    with killer.cursor() as cursor:
        cursor.execute(f"KILL {victim.thread_id()}")
    killer.close()
    with pytest.raises(pymysql.err.OperationalError) as lost:
        victim.cursor().execute("SELECT 1")
    assert lost.value.args[0] in (1927, 2006, 2013) and is_transient(lost.value)
    with pytest.raises(pymysql.err.InterfaceError) as closed:
        victim.cursor().execute("SELECT 1")
    assert is_transient(closed.value)
    with pytest.raises(AttributeError) as dropped:  # what LOAD DATA LOCAL meets after a KILL
        victim._write_bytes(b"\x01")
    assert "'NoneType' object has no attribute 'sendall'" in str(dropped.value)
    assert is_transient(dropped.value)
    assert not is_transient(AttributeError("'NoneType' object has no attribute 'sendall'"))


def _fast_config():
    return dataclasses.replace(WriteToMySql("t", **DB).config, retries=0)


def test_two_thousand_refused_rows_of_twenty_thousand_are_isolated(table):
    my(
        f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(20) NOT NULL, amount int, "
        f"CONSTRAINT `{table}_amount` CHECK (amount >= 0))"
    )
    n = 20_000
    ids = [i - 1 if i % 30 == 29 else i for i in range(n)]  # 666 repeats
    names = [None if i % 30 == 9 else f"n{i}" for i in range(n)]  # 667 NULLs
    amounts = [-1 if i % 30 == 19 or i == 5 else 1 for i in range(n)]  # 667 + 1 negative
    load = pa.record_batch(
        {"id": pa.array(ids, pa.int64()), "name": names, "amount": pa.array(amounts, pa.int32())}
    )
    written, errors = _write([load], table)
    assert (written, len(errors)) == ([n - 2001], 2001)
    assert {e.message.split(" ")[0] for e in errors} == {"Duplicate", "Column", "CONSTRAINT"}
    assert my(f"SELECT count(*) FROM `{table}`") == [(n - 2001,)]
    assert {e.line for e in errors} == {i + 2 for i in range(n) if i % 30 in (9, 19, 29) or i == 5}


def _staged(tmp_path, *batches):
    """Stage `batches` as a sink does (origin `in.csv`, lines from 2); return the parts."""
    from beam_etl.io._ipcparts import IpcPartWriter

    writer, line = IpcPartWriter(str(tmp_path / "parts"), keep_origin=True), 2
    for batch in batches:
        writer.write(with_origin(batch, "in.csv", list(range(line, line + batch.num_rows))))
        line += batch.num_rows
    return writer.close()


def _settings(table, **options):
    sink = WriteToMySql(table, **DB, **options)
    return sink.config, {**sink.settings, "step": "load", "trial": True, "expect": None}


def _on_load(action, table, parts, **options):
    from beam_etl.io.sql.mysql import load as _MyLoad

    config, settings = _settings(table, **options)
    connection = connect(config)
    try:
        return getattr(_MyLoad(connection, table, settings), action)(parts)
    finally:
        connection.close()


def _predict(table, parts, **options):
    return _on_load("predict", table, parts, **options)


def _trial_load(table, parts, **options):
    """What the trial load does (everything rolled back; a missing table made TEMPORARY)."""
    return _on_load("run", table, parts, **options)


def _outcome(result):
    letters = sorted((r.line, r.reason, r.key, r.message) for r in result.rejects)
    return result.written, result.dropped, letters


def _exists(table):
    return my("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = %s", (table,))


PREDICTED_MERGE = {"mode": "merge", "primary_key": "id", "hard_delete_column": "deleted"}


def test_a_merge_only_a_primary_key_guards_is_predicted_as_the_load_does(table, tmp_path):
    """Every exactly stored type, repeated keys, a deletion, a row screened in Arrow (NaN):
    the prediction is what the load does, and the trial publish uses it without loading."""
    from dbfixtures import my_connection

    from beam_etl.io.sql.mysql import publisher as _MyPublish

    my(
        f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(3) NOT NULL, "
        "score double, amount decimal(12,2), at datetime(6), note text, raw varbinary(4), "
        "day date, ok tinyint(1), small float, kept int NOT NULL DEFAULT 7) "
        "DEFAULT CHARSET=utf8mb4"
    )
    my(f"INSERT INTO `{table}` (id, name) VALUES (1, 'old'), (2, 'old'), (3, 'old')")

    def batch(ids, names, scores, deleted):
        n = len(ids)
        return pa.record_batch(
            {
                "id": pa.array(ids, pa.int64()),
                "name": pa.array(names),
                "score": pa.array(scores, pa.float64()),
                "amount": pa.array([D("12345678.90")] * n, pa.decimal128(10, 2)),
                "at": pa.array([STAMP.replace(microsecond=5)] * n, pa.timestamp("us", "UTC")),
                "note": pa.array(["ünïcode ✓"] * n),
                "raw": pa.array([b"\x00\xff"] * n, pa.binary()),
                "day": pa.array([datetime.date(1, 1, 1)] * n, pa.date32()),
                "ok": pa.array([True] * n),
                "small": pa.array([1.5] * n, pa.float32()),
                "deleted": pa.array(deleted),
            }
        )

    parts = _staged(
        tmp_path,
        batch([2, 4, 4, 5], ["a", "b", "bé✓", "c"], [1.0, 2.0, 3.0, float("nan")], [None] * 4),
        batch([3, 6, 2], ["d", "e", "f"], [1.0, 2.0, 3.0], [True, False, False]),
    )
    predicted = _predict(table, parts, **PREDICTED_MERGE)
    assert predicted is not None
    assert _outcome(predicted) == _outcome(_trial_load(table, parts, **PREDICTED_MERGE))
    # keys 2, 3 (deleted), 4, 6 written; the second 2 and 4 dropped; 5 refused (NaN)
    assert predicted.written == 4 and predicted.dropped == 2
    assert [(r.line, r.key) for r in predicted.rejects] == [(5, "5")]
    config, settings = _settings(table, **PREDICTED_MERGE)
    publish = _MyPublish(config, table, {**settings, "run_id": "predicted"})
    with my_connection() as reader, reader.cursor() as cursor:
        # A read lock stops any write: the trial must finish without one.
        cursor.execute(f"LOCK TABLES `{table}` READ")
        done: list = []
        trial = threading.Thread(target=lambda: done.append(publish(parts, commit=False)))
        trial.start()
        trial.join(20)
        finished = bool(done)  # before the lock is gone
        cursor.execute("UNLOCK TABLES")
    trial.join()
    assert finished and _outcome(done[0]) == _outcome(predicted)
    result = publish(parts, expect=done[0])
    assert _outcome(result) == _outcome(predicted)
    assert my(f"SELECT id, name, score, note, raw, day, kept FROM `{table}` ORDER BY id") == [
        (1, "old", None, None, None, None, 7),
        (2, "f", 3.0, "ünïcode ✓", b"\x00\xff", datetime.date(1, 1, 1), 7),
        (4, "bé✓", 3.0, "ünïcode ✓", b"\x00\xff", datetime.date(1, 1, 1), 7),
        (6, "e", 2.0, "ünïcode ✓", b"\x00\xff", datetime.date(1, 1, 1), 7),
    ]


@pytest.mark.parametrize("mode", ["merge", "append", "replace"])
def test_a_load_into_a_table_it_creates_is_predicted_without_creating_it(table, tmp_path, mode):
    load = pa.record_batch(
        {
            "id": pa.array([1, 2, 2, 3], pa.int64()),
            "name": ["a", "b", "b2", "c"],
            "score": pa.array([1.0, 2.0, 2.5, float("inf")]),
        }
    )
    parts = _staged(tmp_path, load)
    options = {"mode": mode, **({"primary_key": "id"} if mode == "merge" else {})}
    predicted = _predict(table, parts, **options)
    assert predicted is not None and _exists(table) == [(0,)]
    assert _outcome(predicted) == _outcome(_trial_load(table, parts, **options))
    written = 2 if mode == "merge" else 3  # merge: keys 1 and 2 (once); key 3 refused (inf)
    assert (predicted.written, [r.line for r in predicted.rejects]) == (written, [5])
    # keys make an append's created table refuse repeats: then the trial loads
    assert _predict(table, parts, mode="append", primary_key="id") is None


def _with_referencing_table(table):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(5)) ENGINE=InnoDB")
    my(
        f"CREATE TABLE `{table}_child` (id bigint PRIMARY KEY, parent bigint, "
        f"FOREIGN KEY (parent) REFERENCES `{table}` (id)) ENGINE=InnoDB"
    )


NOT_PREDICTED = {
    "varchar-too-short": "name varchar(1)",  # `bb` would be refused
    "check": "name varchar(5), CHECK (name <> 'zz')",
    "json": "name json",  # MariaDB: a CHECK (json_valid)
    "second-unique": "name varchar(5) UNIQUE",
    "not-null-gets-null": "name varchar(5) NOT NULL",  # the last row's name is null
    "unloaded-not-null": "name varchar(5), other int NOT NULL",
    "latin1": "name varchar(5) CHARACTER SET latin1",
    "enum": "name enum('a', 'b', 'bb')",
    "generated": "name varchar(5), twice bigint AS (id * 2) VIRTUAL",
    "text-into-int": "name int",
}
OTHER_CASES = ["trigger", "referenced", "partitioned", "int-key", "text-key"]


@pytest.mark.parametrize("case", [*NOT_PREDICTED, *OTHER_CASES])
def test_a_merge_anything_else_may_refuse_a_row_of_is_loaded_in_the_trial(table, tmp_path, case):
    ids = pa.array([1, 2, 2, 3], pa.int64())
    load = pa.record_batch({"id": ids, "name": ["a", "b", "bb", None]})
    parts = _staged(tmp_path, load)
    options = {"mode": "merge", "primary_key": "id"}
    if case in NOT_PREDICTED:
        my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, {NOT_PREDICTED[case]})")
    elif case == "trigger":
        my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(5))")
        my(f"CREATE TRIGGER `{table}_t` BEFORE INSERT ON `{table}` FOR EACH ROW SET @x = 1")
    elif case == "referenced":
        _with_referencing_table(table)
    elif case == "partitioned":  # a row no partition takes is refused
        my(
            f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(5)) "
            "PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (1000))"
        )
    elif case == "int-key":  # an int key cannot hold every int64
        my(f"CREATE TABLE `{table}` (id int PRIMARY KEY, name varchar(5))")
    else:  # compared in the column's collation: `a` and `A` are one key
        my(f"CREATE TABLE `{table}` (id bigint, name varchar(5) PRIMARY KEY)")
        parts = _staged(tmp_path, pa.record_batch({"id": ids[:3], "name": ["a", "A", "b"]}))
        options["primary_key"] = "name"
        assert _trial_load(table, parts, **options).written == 2  # where Arrow counts 3
    try:
        assert _predict(table, parts, **options) is None
    finally:
        my(f"DROP TABLE IF EXISTS `{table}_child`")
    if case == "varchar-too-short":  # the control: a varchar long enough is predicted
        my(f"ALTER TABLE `{table}` MODIFY name varchar(2)")
        assert _predict(table, parts, **options) is not None


def test_a_null_key_or_a_missing_privilege_is_loaded_in_the_trial(table, tmp_path, monkeypatch):
    my(f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, name varchar(5))")
    load = pa.record_batch({"id": pa.array([1, None], pa.int64()), "name": ["a", "b"]})
    assert _predict(table, _staged(tmp_path, load), mode="merge", primary_key="id") is None
    parts = _staged(tmp_path / "ok", load.slice(0, 1))
    assert _predict(table, parts, mode="merge", primary_key="id") is not None
    user = f"u_{table}"[:32]
    my(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        my(f"GRANT SELECT, INSERT, UPDATE, CREATE TEMPORARY TABLES ON test.* TO '{user}'@'%'")
        monkeypatch.setenv("BEAM_ETL_TEST_PW", "pw")
        options = {"mode": "merge", "primary_key": "id", "user": user}
        options["password_env"] = "BEAM_ETL_TEST_PW"
        assert _predict(table, parts, **options) is None  # no DELETE
        my(f"GRANT DELETE ON test.`{table}` TO '{user}'@'%'")
        assert _predict(table, parts, **options) is not None
    finally:
        my(f"DROP USER '{user}'@'%'")


def test_a_dsn_from_the_environment_connects_and_its_password_is_never_shown(table, monkeypatch):
    """`dsn` / `dsn_env` as for PostgreSQL: the keys every database connector spells alike."""
    monkeypatch.setenv("BEAM_ETL_TEST_MY_DSN", "mysql://root:@127.0.0.1:3306/test")
    _write([_batch([1, 2])], table)
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    source = ReadFromMySql(table=table, dsn_env="BEAM_ETL_TEST_MY_DSN")
    assert (source.config.host, source.config.port, source.config.database) == (
        "127.0.0.1",
        3306,
        "test",
    )
    ids = p | source | beam.FlatMap(lambda b: b.column("id").to_pylist())
    assert_that(ids, equal_to([1, 2]))
    p.run().wait_until_finish()
    secret = ReadFromMySql(table=table, dsn="mysql://reader:s3cr%40t@db.example:3307/shop")
    assert (secret.config.user, secret.config.port, secret.config.database) == (
        "reader",
        3307,
        "shop",
    )
    assert secret.config.password.reveal() == "s3cr@t"
    assert "s3cr" not in repr(secret.config) and "s3cr" not in secret.config.describe()
    with pytest.raises(ValueError, match="must look like mysql://") as refused:
        ReadFromMySql(table=table, dsn="postgresql://u:hunter2@h/db")
    assert "hunter2" not in str(refused.value)


class _Load:
    """What `load_data` uses of a load: `execute` on a real connection (LOCAL INFILE on)."""

    def __init__(self, connection):
        self.cursor = connection.cursor()

    def execute(self, sql, params=None):
        self.cursor.execute(sql, params)
        return self.cursor.rowcount


def _pipes() -> set[str]:
    import tempfile

    folder = tempfile.gettempdir()
    return {name for name in os.listdir(folder) if name.startswith("beam_etl_load_")}


def test_load_data_streams_batches_through_a_pipe_and_cleans_up(table):
    from beam_etl.io.sql.mysql_fast import load_data

    my(f"CREATE TABLE `{table}` (id bigint, name text)")
    before = _pipes()
    connection = my_connect(local_infile=True, autocommit=True)
    try:
        batches = [_batch(range(i * 1000, (i + 1) * 1000)) for i in range(5)]
        loaded = load_data(_Load(connection), f"`{table}`", batches[0].schema, iter(batches))
    finally:
        connection.close()
    assert loaded == 5000
    assert my(f"SELECT count(*), count(DISTINCT id), max(name) FROM `{table}`") == [
        (5000, 5000, "n999")
    ]
    assert _pipes() == before


def test_load_data_fails_fast_when_the_statement_fails_or_the_rendering_does(table):
    """A statement refused before it reads the pipe does not leave the renderer waiting on it
    (the call would hang); a rendering error is raised, the rows before it left for the
    caller's rollback."""
    from beam_etl.io.sql.mysql_fast import load_data

    before = _pipes()
    connection = my_connect(local_infile=True)
    load = _Load(connection)
    batch = _batch([1, 2])
    try:
        with pytest.raises(Exception, match="doesn't exist"):
            load_data(load, f"`{table}`", batch.schema, iter([batch]))

        def failing():
            yield batch
            raise ValueError("rendering failed")

        my(f"CREATE TABLE `{table}` (id bigint, name text)")
        with pytest.raises(ValueError, match="rendering failed"):
            load_data(load, f"`{table}`", batch.schema, failing())
        connection.rollback()
    finally:
        connection.close()
    assert my(f"SELECT count(*) FROM `{table}`") == [(0,)]
    assert _pipes() == before
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_CsvPipe"]


def test_an_append_into_myisam_with_an_unloadable_row_writes_the_others_once(table):
    """The rows stream into LOAD DATA as they are rendered: an unloadable row found midway
    must not leave the rows before it in a table that cannot roll back (MyISAM)."""
    my(f"CREATE TABLE `{table}` (id bigint, f double) ENGINE=MyISAM")
    schema = pa.schema([("id", pa.int64()), ("f", pa.float64())])
    good = pa.record_batch({"id": list(range(1, 1001)), "f": [1.5] * 1000}, schema=schema)
    bad = pa.record_batch({"id": [1001], "f": [float("nan")]}, schema=schema)
    written, errors = _write([good, bad], table, mode="append", load_method="load_data")
    assert written == [1000]
    assert [(e.source, e.line) for e in errors] == [("in.csv", 2)]
    assert my(f"SELECT count(*), count(DISTINCT id) FROM `{table}`") == [(1000, 1000)]
