"""Incremental runs through the command line: snapshot diffs applied to a real database, the
state store committed only after every sink published, `state show|reset`."""

import os
import subprocess
import sys

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
  - name: letters
    type: WriteToDeadLetters
    inputs: [customers.error, changes.error, target.error]
    config: {{path: "{out}/letters.jsonl"}}
"""


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

    yield run, target, spec, tmp_path
    pg(f"DROP TABLE IF EXISTS {table}")


def test_five_runs_of_snapshot_diffs_keep_the_target_equal_to_the_source(case, capsys):
    run, target, _, _ = case
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
