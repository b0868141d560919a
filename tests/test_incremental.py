"""Incremental runs through the command line: snapshot diffs applied to a real database, the
state store committed only after every sink published, `state show|reset`."""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from dbfixtures import pg, unique_table

from beam_etl.run import main

SPEC = """
name: incremental_{table}
sources:
  - name: customers
    type: ReadFromCsv
    config: {{path: "{data}", columns: {{id: int64, name: string, city: string}}}}
steps:
  - name: changes
    type: DiffSnapshots
    input: customers
    config: {{primary_key: id, buckets: 8}}
  - name: rows
    type: DropColumns
    input: changes
    config: {{columns: [op, source_ts, source_name, source_position]}}
sinks:
  - name: target
    type: WriteToPostgres
    input: rows
    config: {{table: {table}, database: test, mode: merge, primary_key: id,
              hard_delete_column: deleted}}
  - name: history
    type: WriteToMySql
    input: rows
    config: {{table: {table}_h, database: test, mode: scd2, primary_key: id,
              hard_delete_column: deleted}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [customers.error, changes.error, target.error, history.error]
    config: {{path: "{out}/letters.jsonl"}}
"""


_AS_OF: dict = {}


@pytest.fixture
def case(tmp_path):
    table = unique_table("inc")
    data = tmp_path / "customers.csv"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(table=table, data=data, out=tmp_path / "out"))

    def run(rows: dict[int, tuple[str, str]], *extra) -> int:
        data.write_text("id,name,city\n" + "".join(f"{k},{n},{c}\n" for k, (n, c) in rows.items()))
        return main(["--pipeline", str(spec), "--output-dir", str(tmp_path / "out"), *extra])

    def target() -> dict[int, tuple[str, str]]:
        return {k: (n, c) for k, n, c in pg(f"SELECT id, name, city FROM {table}")}

    def as_of(at: str) -> dict[int, tuple[str, str]]:
        """The history table's picture at `at` (UTC text)."""
        from dbfixtures import my

        rows = my(
            f"SELECT id, name, city FROM {table}_h WHERE valid_from <= %s "
            "AND (valid_to IS NULL OR valid_to > %s)",
            (at, at),
        )
        return {k: (n, c) for k, n, c in rows}

    _AS_OF["history"] = as_of
    yield run, target, spec, tmp_path
    pg(f"DROP TABLE IF EXISTS {table}")
    from dbfixtures import my

    my(f"DROP TABLE IF EXISTS {table}_h")


def test_five_runs_of_snapshot_diffs_keep_the_target_equal_to_the_source(case, capsys):
    run, target, _, _ = case
    pictures = []
    source = {i: (f"name{i}", "Berlin") for i in range(1, 21)}
    for step in range(5):
        if step:
            source = dict(source)
            for key in list(source)[:: 4 + step]:
                del source[key]  # deletes
            for key in list(source)[1 :: 3 + step]:
                source[key] = (source[key][0] + "!", f"city{step}")  # updates
            for key in range(100 * step, 100 * step + 3):
                source[key] = (f"new{key}", "Paris")  # inserts
        assert run(source) == 0, capsys.readouterr().err
        assert target() == source
        time.sleep(0.01)
        pictures.append((datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), source))
    # SCD2: the history table answers "what did key K look like after run N" for every run.
    for at, expected in pictures:
        assert _AS_OF["history"](at) == expected
    capsys.readouterr()
    assert run(source) == 0  # nothing changed: nothing is written
    report = (case[3] / "out" / "run_report.json").read_text()
    assert f'"rows_dropped": {len(source)}' in report  # every row unchanged
    assert target() == source


def test_state_show_and_reset(case, capsys):
    run, target, spec, tmp_path = case
    assert run({1: ("a", "x")}) == 0
    capsys.readouterr()
    state = ["state", "show", "--pipeline", str(spec), "--output-dir", str(tmp_path / "out")]
    assert main(state) == 0
    snapshot = tmp_path / "out" / ".beam_etl" / "state"
    assert any(path.name.startswith("bucket-") for path in snapshot.rglob("*.parquet"))
    assert main(["state", "reset", *state[2:]]) == 0
    assert "reset" in capsys.readouterr().out
    assert not any(snapshot.rglob("*.parquet"))
    # After a reset every row is new again: the merge makes that harmless.
    assert run({1: ("a", "x")}) == 0
    assert target() == {1: ("a", "x")}


def test_kill_9_between_publish_and_state_commit_loses_and_duplicates_nothing(case):
    run, target, spec, tmp_path = case
    assert run({1: ("a", "x"), 2: ("b", "y")}) == 0
    (tmp_path / "customers.csv").write_text("id,name,city\n1,a,x\n3,c,z\n")
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(spec)]
    command += ["--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "BEAM_ETL_KILL_AT": "before_state_commit"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9
    assert target() == {1: ("a", "x"), 3: ("c", "z")}  # published, state not moved
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert target() == {1: ("a", "x"), 3: ("c", "z")}


CURSOR_SPEC = """
name: cursor_{table}
sources:
  - name: orders
    type: ReadFromPostgres
    config:
      table: {table}
      database: test
      incremental: {{cursor: updated_at, lag: 1h, initial: "2020-01-01T00:00:00+00:00"}}
sinks:
  - name: replica
    type: WriteToMySql
    input: orders
    config: {{table: {table}, database: test, mode: merge, primary_key: id}}
  - name: letters
    type: WriteToDeadLetters
    input: replica.error
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""


@pytest.fixture
def cursor_case(tmp_path):
    from dbfixtures import my

    table = unique_table("cur")
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
    spec = tmp_path / "cursor.yaml"
    spec.write_text(CURSOR_SPEC.format(table=table))

    def run() -> dict:
        code = main(["--pipeline", str(spec), "--output-dir", str(tmp_path / "out")])
        assert code == 0
        return json.loads((tmp_path / "out" / "run_report.json").read_text())

    def same() -> bool:
        source = pg(f"SELECT id, name FROM {table} ORDER BY id")
        target = my(f"SELECT id, name FROM {table} ORDER BY id")
        return [tuple(r) for r in source] == [tuple(r) for r in target]

    yield table, run, same
    pg(f"DROP TABLE IF EXISTS {table}")
    my(f"DROP TABLE IF EXISTS {table}")


def _rows_read(report: dict) -> int:
    return next(s["rows_in"] for s in report["steps"] if s["name"] == "orders")


def test_cursor_increments_with_updates_and_late_commits_keep_the_replica_equal(cursor_case):
    table, run, same = cursor_case
    at = "TIMESTAMPTZ '2024-01-01 12:00:00+00' + make_interval(mins => %s)"
    for i in range(10):
        pg(f"INSERT INTO {table} VALUES (%s, %s, {at})", (i, f"n{i}", i))
    assert _rows_read(run()) == 10 and same()
    # Updates move their cursor forward; new rows; and a late commit: a row whose cursor is
    # older than the last high mark (a transaction that started before the last run).
    pg(f"UPDATE {table} SET name = name || '!', updated_at = {at} WHERE id < 3", (30,))
    pg(f"INSERT INTO {table} VALUES (10, 'n10', {at}), (11, 'late', {at})", (31, 5))
    assert _rows_read(run()) == 5 and same()  # 3 updates, 1 new, 1 late
    assert _rows_read(run()) == 0 and same()  # nothing changed: nothing read twice
    pg(f"UPDATE {table} SET name = 'again', updated_at = {at} WHERE id = 11", (40,))
    assert _rows_read(run()) == 1 and same()
    pg(f"INSERT INTO {table} VALUES (12, 'n12', {at})", (41,))
    assert _rows_read(run()) == 1 and same()


@pytest.mark.parametrize(
    "point", ["during_read", "after_prepare", "between_publishes", "before_state_commit"]
)
def test_kill_9_anywhere_then_rerun_keeps_the_replica_equal_and_state_behind(
    cursor_case, tmp_path, point
):
    from beam_etl.core.state import StateStore

    table, run, same = cursor_case
    at = "TIMESTAMPTZ '2024-01-01 12:00:00+00' + make_interval(mins => %s)"
    for i in range(10):
        pg(f"INSERT INTO {table} VALUES (%s, %s, {at})", (i, f"n{i}", i))
    run()
    store = StateStore(str(tmp_path / "out" / ".beam_etl" / "state.sqlite"))
    before = store.get(f"cursor_{table}", "orders")
    pg(f"UPDATE {table} SET name = 'changed', updated_at = {at} WHERE id < 4", (20,))
    pg(f"INSERT INTO {table} VALUES (10, 'n10', {at})", (21,))
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(tmp_path / "cursor.yaml")]
    command += ["--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "BEAM_ETL_KILL_AT": point}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert store.get(f"cursor_{table}", "orders") == before  # never ahead of the data
    report = run()
    assert same()
    assert store.get(f"cursor_{table}", "orders")["cursor"] == "2024-01-01T12:21:00+00:00"
    assert report["status"] == "succeeded"


def test_file_increments_load_new_files_once_and_report_changed_ones(tmp_path, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    spec = tmp_path / "files.yaml"
    spec.write_text(
        f"""
name: files
sources:
  - name: drops
    type: ReadFromCsv
    config: {{path: "{inbox}/*.csv", incremental: true}}
sinks:
  - name: rows
    type: WriteToSqlite
    input: drops
    config: {{database: "{tmp_path}/w.sqlite", table: t, mode: append}}
  - name: letters
    type: WriteToDeadLetters
    input: drops.error
    config: {{path: "{tmp_path}/letters.jsonl"}}
"""
    )

    def drop(name: str, ids: range) -> None:
        path = inbox / name
        path.write_text("id\n" + "".join(f"{i}\n" for i in ids))
        old = os.stat(path).st_mtime - 10  # written a while ago: not still being written
        os.utime(path, (old, old))

    def run() -> list[int]:
        assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path / "out")]) == 0
        import sqlite3

        rows = sqlite3.connect(tmp_path / "w.sqlite").execute("SELECT id FROM t ORDER BY id")
        return [r[0] for r in rows]

    drop("a.csv", range(0, 3))
    assert run() == [0, 1, 2]
    drop("b.csv", range(10, 12))
    assert run() == [0, 1, 2, 10, 11]  # only the new file
    capsys.readouterr()
    assert run() == [0, 1, 2, 10, 11]  # nothing new: nothing loaded
    drop("a.csv", range(0, 5))  # changed since it was loaded: reported, not loaded again
    (inbox / "b.csv").unlink()  # deleted: nothing to do
    assert run() == [0, 1, 2, 10, 11]
    out = capsys.readouterr().out
    assert "warning: `drops`: 1 file(s) changed since they were loaded" in out
    assert "a.csv" in out
    # A file appearing while the run lists the folder (modified this very second, maybe
    # still being written) is left for the next run, and said so.
    (inbox / "c.csv").write_text("id\n20\n")
    assert run() == [0, 1, 2, 10, 11]
    assert "1 file(s) still being written, left for the next run" in capsys.readouterr().out
    old = os.stat(inbox / "c.csv").st_mtime - 10
    os.utime(inbox / "c.csv", (old, old))
    assert run() == [0, 1, 2, 10, 11, 20]


NULL_SPEC = """
name: nulls_{table}
sources:
  - name: orders
    type: ReadFromPostgres
    config:
      table: {table}
      database: test
      incremental: {{cursor: updated_at, on_null: reject}}
sinks:
  - name: copy
    type: WriteToParquet
    input: orders
    config: {{path: "${{OUTPUT_DIR}}/copy"}}
  - name: letters
    type: WriteToDeadLetters
    input: orders.error
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""


def test_on_null_reject_sends_rows_without_a_cursor_to_dead_letters_every_run(tmp_path):
    import pyarrow.parquet as pq

    table = unique_table("nul")
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, updated_at timestamptz)")
    try:
        pg(f"INSERT INTO {table} VALUES (1, now()), (2, NULL), (3, now())")
        spec = tmp_path / "nulls.yaml"
        spec.write_text(NULL_SPEC.format(table=table))
        out = tmp_path / "out"
        loaded = []
        for _ in range(2):  # a row without a cursor is reported again until it has one
            assert main(["--pipeline", str(spec), "--output-dir", str(out)]) == 0
            letters = [json.loads(line) for line in (out / "letters.jsonl").open()]
            assert [(d["reason"], d["payload"]["id"]) for d in letters] == [("null_cursor", 2)]
            assert letters[0]["source"] == table and "updated_at" in letters[0]["message"]
            copy = pq.read_table(out / "copy")
            loaded.append(sorted(copy.column("id").to_pylist()) if copy.num_rows else [])
        assert loaded == [[1, 3], []]  # the second run: 1 and 3 were loaded by the first
        report = json.loads((out / "run_report.json").read_text())
        assert report["status"] == "succeeded"
    finally:
        pg(f"DROP TABLE IF EXISTS {table}")


def test_on_null_reject_needs_its_error_output_read(tmp_path, capsys):
    spec = tmp_path / "nulls.yaml"
    spec.write_text(NULL_SPEC.format(table="t").split("  - name: letters")[0])
    assert main(["--pipeline", str(spec), "--dry-run"]) == 2
    assert "orders.error" in capsys.readouterr().err


KEPT_SPEC = """
name: kept_{table}
sources:
  - name: orders
    type: ReadFromPostgres
    config:
      table: {table}
      database: test
      incremental: {{cursor: updated_at, lag: 1h, initial: "2020-01-01T00:00:00+00:00"}}
sinks:
  - name: replica
    type: WriteToMySql
    input: orders
    config: {{table: {table}, database: test, mode: merge, primary_key: id, keep_state: true}}
  - name: letters
    type: WriteToDeadLetters
    input: replica.error
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""


def test_state_kept_in_the_target_database_commits_with_the_load(tmp_path, capsys):
    """`keep_state`: the cursor is written in the load's transaction, so a run killed after
    that commit (before the local state store's) does not read its rows again."""
    from dbfixtures import my

    from beam_etl.core.state import StateStore

    table = unique_table("kept")
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
    spec = tmp_path / "kept.yaml"
    spec.write_text(KEPT_SPEC.format(table=table))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(spec)]
    command += ["--output-dir", str(out)]
    at = "TIMESTAMPTZ '2024-01-01 12:00:00+00' + make_interval(mins => %s)"

    def rows_read() -> int:
        report = json.loads((out / "run_report.json").read_text())
        return next(s["rows_in"] for s in report["steps"] if s["name"] == "orders")

    def same() -> bool:
        source = pg(f"SELECT id, name FROM {table} ORDER BY id")
        return [tuple(r) for r in source] == [
            tuple(r) for r in my(f"SELECT id, name FROM {table} ORDER BY id")
        ]

    try:
        for i in range(5):
            pg(f"INSERT INTO {table} VALUES (%s, %s, {at})", (i, f"n{i}", i))
        assert main(["--pipeline", str(spec), "--output-dir", str(out)]) == 0
        assert same()
        pg(f"INSERT INTO {table} VALUES (5, 'n5', {at})", (200,))  # beyond the lag window
        env = {**os.environ, "BEAM_ETL_KILL_AT": "before_state_commit"}
        killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, killed.stderr
        assert same()
        local = StateStore(str(out / ".beam_etl" / "state.sqlite")).get(f"kept_{table}", "orders")
        kept = my("SELECT value FROM _beam_etl_state WHERE pipeline = %s", (f"kept_{table}",))
        assert json.loads(kept[0][0])["cursor"] > local["cursor"]  # the database is ahead
        assert main(["--pipeline", str(spec), "--output-dir", str(out)]) == 0
        assert rows_read() == 0 and same()  # the database's cursor was used: nothing re-read
        capsys.readouterr()
        state = ["state", "show", "--pipeline", str(spec), "--output-dir", str(out)]
        assert main(state) == 0
        assert "kept in the database of `replica`" in capsys.readouterr().out
        assert main(["state", "reset", *state[2:]]) == 0
        assert my(
            "SELECT count(*) FROM _beam_etl_state WHERE pipeline = %s", (f"kept_{table}",)
        ) == [(0,)]
        assert main(["--pipeline", str(spec), "--output-dir", str(out)]) == 0
        assert rows_read() == 6 and same()  # after a reset: everything again, merged
    finally:
        pg(f"DROP TABLE IF EXISTS {table}")
        my(f"DROP TABLE IF EXISTS {table}")
        my("DELETE FROM _beam_etl_state WHERE pipeline = %s", (f"kept_{table}",))


def test_two_sinks_cannot_both_keep_the_state(tmp_path, capsys):
    spec = tmp_path / "two.yaml"
    text = (
        KEPT_SPEC.format(table="t")
        .replace(
            "  - name: letters",
            "  - name: second\n    type: WriteToPostgres\n    input: orders\n"
            "    config: {table: t, database: test, keep_state: true}\n  - name: letters",
        )
        .replace("input: replica.error", "inputs: [replica.error, second.error]")
    )
    spec.write_text(text)
    assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path / "out")]) == 2
    assert "Only one sink can keep the state" in capsys.readouterr().err


def test_a_state_table_that_cannot_be_made_is_one_error_line(tmp_path, capsys):
    """`keep_state` for a user who may not create `_beam_etl_state`: one line, no traceback."""
    data = tmp_path / "in.csv"
    data.write_text("id\n1\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""
name: no_rights
sources:
  - name: rows
    type: ReadFromCsv
    config: {{path: "{data}", incremental: true}}
sinks:
  - name: target
    type: WriteToPostgres
    input: rows
    config: {{table: no_rights_t, database: test, user: beam_etl_no_create, keep_state: true}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [rows.error, target.error]
    config: {{path: "{tmp_path}/letters.jsonl"}}
"""
    )
    pg("DROP ROLE IF EXISTS beam_etl_no_create")
    pg("CREATE ROLE beam_etl_no_create LOGIN")
    try:
        assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "_beam_etl_state" in err[0], err
        assert "Traceback" not in err[0] and "permission denied" in err[0]
    finally:
        pg("DROP ROLE IF EXISTS beam_etl_no_create")
