"""Loading while the read runs (io/sql/early.py) against the real PostgreSQL server.

Through the command line (deferred publishing), a database sink's bundles COPY their rows into
a staging table during the read and the publish renames or swaps it into place. Each test
shows that the early path was taken (the publish claimed the staging table) or, where it must
not be, that it was not, and that the result is the usual one: the same rows, dead letters
with their origin, nothing published by a failed run, no staging table or parts row left
behind, and a target with only its own columns.
"""

import dataclasses
import decimal
import json
import os
import subprocess
import sys
import threading

import pyarrow as pa
import pytest
from dbfixtures import PG, pg, pg_connection, unique_table

from beam_etl.core.batches import FILE_COLUMN, LINE_COLUMN
from beam_etl.io.sql.early import EarlyPartWriter, EarlyStage
from beam_etl.io.sql.ledger import LedgerPublish
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.postgres import PostgresDialect
from beam_etl.run import main

SPEC = """
name: early
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{data}", columns: {{id: int64, amount: float64}}}}
steps:
  - name: gate
    type: CheckRowCount
    input: src
    config: {{min_rows: {min_rows}, severity: fail}}
sinks:
  - name: load
    type: WriteToPostgres
    input: gate
    config: {{table: {table}, database: test, mode: {mode}{extra}}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, load.error]
    config: {{path: "{out}/letters.jsonl"}}
"""


@pytest.fixture
def table():
    name = unique_table("early")
    yield name
    pg(f"DROP TABLE IF EXISTS {name}")


def _csv(tmp_path, rows, bad=()):
    path = tmp_path / "in.csv"
    lines = [f"{i},name {i},{i * 1.5}\n" for i in range(1, rows + 1)]
    for index, text in bad:
        lines[index] = text
    path.write_text("id,name,amount\n" + "".join(lines))
    return path


def _run(tmp_path, table, *, mode="append", extra="", min_rows=0, args=()) -> int:
    spec = tmp_path / "spec.yaml"
    data = tmp_path / "in.csv"
    spec.write_text(
        SPEC.format(
            data=data, table=table, mode=mode, extra=extra, out=tmp_path / "out", min_rows=min_rows
        )
    )
    return main(["--pipeline", str(spec), "--output-dir", str(tmp_path / "out"), *args])


_PUBLISHED_EARLY: list[str] = []  # the targets a publish made from their staging table


@pytest.fixture(autouse=True)
def _claims(monkeypatch):
    """Note every publish (not a trial) that `EarlyStage.claim` made from the staging table."""
    claim = EarlyStage.claim

    def noted(self, load, parts, fields):
        result = claim(self, load, parts, fields)
        if result is not None and not load.trial:
            _PUBLISHED_EARLY.append(self.table)
        return result

    _PUBLISHED_EARLY.clear()
    monkeypatch.setattr(EarlyStage, "claim", noted)


def _loaded_early(table) -> bool:
    """Whether `table` was published from the staging table its load filled during the read
    (and has only its own columns: the staging table had no other)."""
    dropped = pg(
        f"SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attisdropped"
    )
    assert dropped == [(0,)]
    return table in _PUBLISHED_EARLY


def _left_behind() -> list:
    """The staging tables left on the server (of any test: they run one at a time)."""
    return pg("SELECT relname FROM pg_class WHERE relname LIKE '\\_beam\\_etl\\_early\\_%'")


def _letters(tmp_path) -> list[dict]:
    path = tmp_path / "out" / "letters.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_append_into_a_new_table_is_loaded_while_the_run_reads(tmp_path, table):
    _csv(tmp_path, 500)
    assert _run(tmp_path, table, extra=", primary_key: [id]") == 0
    assert pg(f"SELECT count(*), sum(id), sum(amount) FROM {table}") == [(500, 125250, 187875.0)]
    assert _loaded_early(table)
    # The table is as the usual publish creates it: key NOT NULL, its index named after it.
    assert pg(f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'") == [
        (f"{table}_pkey",)
    ]
    columns = pg(
        f"SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        f"WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )
    assert columns == [
        ("id", "bigint", True),
        ("name", "text", False),
        ("amount", "double precision", False),
    ]
    assert _left_behind() == []
    # A second append into the table that now exists is published the usual way.
    pg(f"DELETE FROM {table} WHERE id > 250")
    assert _run(tmp_path, table, extra=", primary_key: [id]") == 0
    assert pg(f"SELECT count(*) FROM {table}")[0][0] == 500
    letters = _letters(tmp_path)
    assert len(letters) == 250 and {d["reason"] for d in letters} == {"db_constraint"}
    assert _left_behind() == []


def test_a_replace_swaps_the_staging_table_in_and_keeps_indexes_and_serials(tmp_path, table):
    pg(
        f"CREATE TABLE {table} (serial_no serial, id bigint PRIMARY KEY, name text, "
        f"amount double precision)"
    )
    pg(f"CREATE INDEX {table}_by_name ON {table} (name)")
    pg(f"INSERT INTO {table} (id, name, amount) VALUES (9999, 'old', 0)")
    pg(f"COMMENT ON TABLE {table} IS 'orders, replaced nightly'")
    _csv(tmp_path, 300)
    assert _run(tmp_path, table, mode="replace") == 0
    assert pg(f"SELECT count(*), min(id), max(id) FROM {table}") == [(300, 1, 300)]
    assert _loaded_early(table)
    indexes = sorted(
        i for (i,) in pg(f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'")
    )
    assert indexes == sorted([f"{table}_pkey", f"{table}_by_name"])
    assert pg(f"SELECT obj_description('{table}'::regclass, 'pg_class')") == [
        ("orders, replaced nightly",)
    ]
    # the serial column still counts on from its sequence
    pg(f"INSERT INTO {table} (id) VALUES (100000)")
    assert pg(f"SELECT serial_no FROM {table} WHERE id = 100000")[0][0] > 0
    assert _left_behind() == []


def test_a_row_the_server_refuses_falls_back_to_the_usual_publish(tmp_path, table):
    pg(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, amount double precision "
        "CHECK (amount < 100))"
    )
    _csv(tmp_path, 100)  # amounts 1.5 .. 150: ids 67.. are refused by the CHECK
    assert _run(tmp_path, table, mode="replace", extra=", on_reject: dead_letter") == 0
    assert pg(f"SELECT count(*), max(id) FROM {table}") == [(66, 66)]
    assert not _loaded_early(table)  # the staging table was dropped, the parts loaded
    letters = _letters(tmp_path)
    assert len(letters) == 34 and {d["line"] for d in letters} == set(range(68, 102))
    assert _left_behind() == []


def test_a_failed_run_publishes_nothing_and_drops_its_staging_table(tmp_path, table):
    _csv(tmp_path, 50)
    assert _run(tmp_path, table, min_rows=1000) == 1  # the row count gate fails
    assert pg(f"SELECT to_regclass('{table}')")[0][0] is None
    assert _left_behind() == []


def test_a_killed_run_leaves_its_staging_table_to_the_next_run(tmp_path, table):
    _csv(tmp_path, 50)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        SPEC.format(
            data=tmp_path / "in.csv",
            table=table,
            mode="append",
            extra="",
            min_rows=0,
            out=tmp_path / "out",
        )
    )
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(spec)]
    command += ["--output-dir", str(tmp_path / "out"), "--run-id", "k1"]
    env = {**os.environ, "BEAM_ETL_KILL_AT": "after_prepare"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert pg(f"SELECT to_regclass('{table}')")[0][0] is None
    assert _left_behind() != []  # the killed run could not drop it
    assert _run(tmp_path, table, args=("--run-id", "k1")) == 0  # sweeps it, then publishes
    assert pg(f"SELECT count(*) FROM {table}")[0][0] == 50
    assert _left_behind() == []


def test_two_worker_processes_load_in_parallel_streams(tmp_path, table):
    _csv(tmp_path, 3000)
    args = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert _run(tmp_path, table, args=args) == 0
    assert pg(f"SELECT count(*), sum(id) FROM {table}") == [(3000, 4501500)]
    assert _loaded_early(table)
    assert _left_behind() == []


def _stage(table: str) -> EarlyStage:
    config = DbConfig(
        dialect="postgres", host=PG["host"], port=PG["port"], database="test", user="postgres"
    )
    options = SinkOptions.of({"mode": "append", "run_id": "direct", "step": "load"})
    return EarlyStage(PostgresDialect(), config, table, options, f"_beam_etl_early_{table[-10:]}")


def _bundle(stage, folder, ids) -> list:
    writer = EarlyPartWriter(str(folder), stage)
    writer.write(pa.record_batch({"id": pa.array(ids, pa.int64())}))
    return writer.close()


def test_rows_of_a_bundle_attempt_the_runner_did_not_keep_are_not_published(tmp_path, table):
    stage = _stage(table)
    try:
        kept = _bundle(stage, tmp_path, [1, 2, 3])
        _bundle(stage, tmp_path, [1, 2, 3])  # a failed attempt of the same bundle, committed
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        assert publish.trial(kept).written == 3
        result = publish(kept)
        assert (result.written, result.rejects) == (3, [])
        assert pg(f"SELECT id FROM {table} ORDER BY id") == [(1,), (2,), (3,)]
        assert _loaded_early(table)
    finally:
        stage.remove()
    assert _left_behind() == []


def _publishes_ids_1_to_3_the_usual_way(stage, table, parts) -> None:
    publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
    assert publish(parts).written == 3
    assert pg(f"SELECT id FROM {table} ORDER BY id") == [(1,), (2,), (3,)]
    assert not _loaded_early(table)


def test_a_registry_of_another_version_makes_the_publish_load_the_parts(tmp_path, table):
    """Entries without the transaction id (a run read by an earlier version, a comment that is
    not ours) are no registry: the publish loads the local parts, it does not fail."""
    stage = _stage(table)
    try:
        kept = _bundle(stage, tmp_path, [1, 2, 3])
        old = {"kind": "create", "parts": [{"part": 7, "paths": [p for p, _ in kept]}]}
        pg(f"COMMENT ON TABLE {stage.relation} IS '{json.dumps(old)}'")
        _publishes_ids_1_to_3_the_usual_way(stage, table, kept)
    finally:
        stage.remove()
    assert _left_behind() == []


def test_a_staging_table_outside_the_heap_is_not_loaded_early(tmp_path, table, monkeypatch):
    """Bundles are told apart by their rows' `xmin`, which only PostgreSQL's heap promises: a
    staging table in another access method is dropped and the load goes the usual way."""
    from beam_etl.io.sql import postgres

    pg(f"CREATE TABLE {table} (id int)")
    with pg_connection() as connection, connection.cursor() as cursor:
        assert postgres._heap(cursor, table)
        assert not postgres._heap(cursor, f"{table}_not_there")
    pg(f"DROP TABLE {table}")
    monkeypatch.setattr(postgres, "_heap", lambda cursor, relation: False)
    _csv(tmp_path, 20)
    assert _run(tmp_path, table) == 0
    assert pg(f"SELECT count(*) FROM {table}") == [(20,)]
    assert not _loaded_early(table)
    assert _left_behind() == []


def test_a_part_that_was_not_loaded_early_makes_the_publish_load_the_parts(tmp_path, table):
    stage = _stage(table)
    try:
        early = _bundle(stage, tmp_path, [1, 2])
        from beam_etl.io._ipcparts import IpcPartWriter

        plain = IpcPartWriter(str(tmp_path), keep_origin=True)
        plain.write(pa.record_batch({"id": pa.array([3], pa.int64())}))
        _publishes_ids_1_to_3_the_usual_way(stage, table, sorted(early + plain.close()))
    finally:
        stage.remove()
    assert _left_behind() == []


def test_rows_the_database_cannot_store_are_dead_letters_with_their_line(tmp_path, table):
    stage = _stage(table)
    batch = pa.record_batch(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "name": pa.array(["a", "nul \x00 inside", "c"]),
            FILE_COLUMN: pa.array(["in.csv"] * 3),
            LINE_COLUMN: pa.array([2, 3, 4], pa.int64()),
        }
    )
    try:
        writer = EarlyPartWriter(str(tmp_path), stage)
        writer.write(batch)
        parts = writer.close()
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        tried = publish.trial(parts)
        result = publish(
            parts, expect=tried._replace(rejects=[r._replace(payload=None) for r in tried.rejects])
        )
        assert result.written == 2
        (letter,) = result.rejects
        assert (letter.reason, letter.source, letter.line) == ("db_constraint", "in.csv", 3)
        assert pg(f"SELECT id FROM {table} ORDER BY id") == [(1,), (3,)]
        assert _loaded_early(table)
    finally:
        stage.remove()
    assert _left_behind() == []


def test_a_target_changed_during_the_run_is_replaced_the_usual_way(tmp_path, table):
    pg(f"CREATE TABLE {table} (id bigint)")
    stage = _stage(table)
    stage = EarlyStage(
        stage.dialect,
        stage.config,
        table,
        SinkOptions.of({"mode": "replace", "run_id": "r"}),
        stage.name,
    )
    try:
        parts = _bundle(stage, tmp_path, [1, 2, 3])
        pg(f"ALTER TABLE {table} ADD CONSTRAINT small CHECK (id < 3)")  # after the bundle
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        result = publish(parts)
        assert result.written == 2 and [r.reason for r in result.rejects] == ["db_constraint"]
        assert pg(f"SELECT id FROM {table} ORDER BY id") == [(1,), (2,)]
        assert not _loaded_early(table)
    finally:
        stage.remove()
    assert _left_behind() == []


@pytest.fixture
def early_merges(monkeypatch):
    """The staging tables merged early (the launcher publishes in this process)."""
    calls = []
    original = PostgresDialect.merge_early_stage

    def recorded(self, load, relation, names):
        calls.append(relation)
        return original(self, load, relation, names)

    monkeypatch.setattr(PostgresDialect, "merge_early_stage", recorded)
    return calls


def test_a_merge_is_upserted_from_the_staging_table_loaded_during_the_read(
    tmp_path, table, early_merges
):
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, amount double precision)")
    pg(f"INSERT INTO {table} SELECT i, 'old', 0 FROM generate_series(1, 100) i")
    path = tmp_path / "in.csv"
    path.write_text("id,name,amount\n" + "".join(f"{i},new {i},{i}.5\n" for i in range(51, 151)))
    assert _run(tmp_path, table, mode="merge", extra=", primary_key: [id]") == 0
    assert len(early_merges) == 1
    assert pg(f"SELECT count(*), count(*) FILTER (WHERE name = 'old') FROM {table}") == [(150, 50)]
    assert pg(f"SELECT name, amount FROM {table} WHERE id = 51") == [("new 51", 51.5)]
    assert _left_behind() == []


def test_a_merge_whose_keys_repeat_is_merged_the_usual_way(tmp_path, table, early_merges):
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, amount double precision)")
    path = tmp_path / "in.csv"
    path.write_text("id,name,amount\n1,first,1\n2,two,2\n1,last,3\n")
    assert _run(tmp_path, table, mode="merge", extra=", primary_key: [id]") == 0
    assert early_merges == []
    assert pg(f"SELECT id, name FROM {table} ORDER BY id") == [(1, "last"), (2, "two")]
    assert _left_behind() == []


def _options(mode, **more):
    return SinkOptions.of({"mode": mode, "run_id": "r", "step": "load", **more})


def _with(stage, **changes):
    return dataclasses.replace(stage, **changes)


def test_a_bundle_whose_schema_changes_stops_its_early_load_without_hanging(tmp_path, table):
    stage = _stage(table)
    try:
        writer = EarlyPartWriter(str(tmp_path), stage)
        writer.write(pa.record_batch({"id": pa.array([1, 2], pa.int64())}))
        done = threading.Event()
        threading.Thread(
            target=lambda: (
                writer.write(
                    pa.record_batch({"id": pa.array([3], pa.int64()), "n": pa.array(["x"])})
                ),
                done.set(),
            ),
            daemon=True,
        ).start()
        assert done.wait(20), "the bundle hung when its schema changed"
        parts = writer.close()
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        assert publish(parts).written == 3  # the usual publish, from the local parts
        assert not _loaded_early(table)
    finally:
        stage.remove()
    assert _left_behind() == []


def test_a_failed_bundle_leaves_no_stream_that_blocks_the_runs_end(tmp_path, table):
    stage = _stage(table)
    writer = EarlyPartWriter(str(tmp_path), stage)
    writer.write(pa.record_batch({"id": pa.array([1, 2], pa.int64())}))  # streaming, open
    removed = threading.Event()
    threading.Thread(target=lambda: (stage.remove(), removed.set()), daemon=True).start()
    assert removed.wait(20), "the run's end waited on the failed bundle's open stream"
    writer.abort()
    assert _left_behind() == []


def test_a_replace_that_would_round_values_is_not_loaded_early(tmp_path, table):
    pg(f"CREATE TABLE {table} (id bigint, amount numeric(10,2))")
    stage = _with(_stage(table), options=_options("replace"))
    batch = pa.record_batch({"id": pa.array([1, 2], pa.int64()), "amount": pa.array([1.5, 1.234])})
    try:
        writer = EarlyPartWriter(str(tmp_path), stage)
        writer.write(batch)
        parts = writer.close()
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        result = publish(parts)
        assert result.written == 1 and [r.reason for r in result.rejects] == ["db_constraint"]
        assert pg(f"SELECT id, amount FROM {table}") == [(1, decimal.Decimal("1.50"))]
    finally:
        stage.remove()
    assert _left_behind() == []


def test_an_early_merge_casts_values_as_the_usual_merge_does(tmp_path, table):
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, u uuid)")
    stage = _with(_stage(table), options=_options("merge", keys=("id",)))
    uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    batch = pa.record_batch({"id": pa.array([1], pa.int64()), "u": pa.array([uid])})
    try:
        writer = EarlyPartWriter(str(tmp_path), stage)
        writer.write(batch)
        parts = writer.close()
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        assert publish(parts, expect=publish.trial(parts)).written == 1
        assert pg(f"SELECT id, u::text FROM {table}") == [(1, uid)]
    finally:
        stage.remove()
    assert _left_behind() == []


def test_index_names_are_the_ones_postgresql_would_choose(tmp_path):
    table = unique_table("early") + "_" + "x" * 40  # 57 characters: `_pkey1` just fits
    taken = unique_table("other")
    pg(f'CREATE TABLE {taken} (id int CONSTRAINT "{table}_pkey" PRIMARY KEY)')
    stage = _with(_stage(table), options=_options("append", keys=("id",)))
    try:
        parts = _bundle(stage, tmp_path, [1, 2])
        LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)(parts)
        assert _loaded_early(table)
        (early,) = pg(f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'")
        pg(f"DROP TABLE {table}; CREATE TABLE {table} (id bigint PRIMARY KEY)")
        (usual,) = pg(f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'")
        assert early == usual == (f"{table}_pkey1",)  # the first choice was taken
    finally:
        stage.remove()
        pg(f"DROP TABLE IF EXISTS {table}; DROP TABLE {taken}")


def test_a_column_made_not_null_during_the_run_is_replaced_the_usual_way(tmp_path, table):
    pg(f"CREATE TABLE {table} (id bigint, note text)")
    stage = _with(_stage(table), options=_options("replace"))
    batch = pa.record_batch({"id": pa.array([1, None], pa.int64())})
    try:
        writer = EarlyPartWriter(str(tmp_path), stage)
        writer.write(batch)
        parts = writer.close()
        pg(f"ALTER TABLE {table} ALTER COLUMN id SET NOT NULL")
        publish = LedgerPublish(stage.dialect, stage.config, table, stage.options, stage)
        result = publish(parts)
        assert result.written == 1 and len(result.rejects) == 1
        assert not _loaded_early(table)
        assert pg(
            f"SELECT attnotnull FROM pg_attribute WHERE attrelid = '{table}'::regclass "
            "AND attname = 'id'"
        ) == [(True,)]
    finally:
        stage.remove()
    assert _left_behind() == []
