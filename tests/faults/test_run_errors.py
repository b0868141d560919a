"""Failures while a pipeline runs, and Ctrl-C: one line naming the step, exit 1 or 2, nothing
published, no Beam log lines or tracebacks (unless --debug), with one worker or two."""

import os
import signal
import subprocess
import sys
import time

import pytest
from dbfixtures import pg, unique_table

TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]

SLOW = """
import time


def slow(batch):
    time.sleep(60)
    return batch


def not_a_batch(batch):  # a programming error MapBatches cannot turn into dead letters
    return "not a batch"
"""

SPEC = """
name: errors
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{data}"}}
steps:
  - name: work
    type: {step}
    input: src
    config: {config}
sinks:
  - name: out
    type: WriteToParquet
    input: work
    config: {{path: "{out}/parquet"}}
  - name: db
    type: WriteToPostgres
    input: work
    config: {{table: {table}, database: "{database}", connect_timeout: 2, on_reject: fail}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, {work_error}db.error]
    config: {{path: "{out}/letters.jsonl"}}
"""


def _spec(
    tmp_path, function="slowfns:slow", database="test", step="MapBatches", table="run_errors_t"
) -> str:
    (tmp_path / "slowfns.py").write_text(SLOW)
    data = tmp_path / "in.csv"
    data.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(100)))
    path = tmp_path / "spec.yaml"
    config = f'{{function: "{function}"}}' if step == "MapBatches" else "{columns: [id, name]}"
    out = tmp_path / "out"
    work_error = "work.error, " if step == "MapBatches" else ""
    text = SPEC.format(
        data=data,
        step=step,
        config=config,
        out=out,
        database=database,
        work_error=work_error,
        table=table,
    )
    path.write_text(text)
    return str(path)


def _command(tmp_path, spec, *extra) -> list[str]:
    output = str(tmp_path / "out")
    return [
        sys.executable,
        "-m",
        "beam_etl.run",
        "--pipeline",
        spec,
        "--output-dir",
        output,
        *extra,
    ]


def _env(tmp_path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize("workers", [[], TWO_WORKERS], ids=["1-worker", "2-workers"])
def test_ctrl_c_prints_one_error_line_and_publishes_nothing(tmp_path, workers):
    spec = _spec(tmp_path)
    process = subprocess.Popen(
        _command(tmp_path, spec, *workers),
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(6)  # the run is inside `slow` by now (it sleeps a minute)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in err and "INFO" not in err and "WARNING" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: Interrupted (Ctrl-C) while running; nothing was published (report: "
        f"{tmp_path / 'out' / 'run_report.json'})"
    ]
    assert not (tmp_path / "out" / "parquet").exists()
    assert not (tmp_path / "out" / "letters.jsonl").exists()


@pytest.mark.parametrize("workers", [[], TWO_WORKERS], ids=["1-worker", "2-workers"])
def test_a_failure_inside_a_running_step_is_one_line_naming_the_step(tmp_path, workers):
    table = unique_table("errors")
    pg(f"CREATE TABLE {table} (id bigint CHECK (id <> 5), name text)")
    try:
        spec = _spec(tmp_path, step="SelectColumns", table=table)
        result = subprocess.run(
            _command(tmp_path, spec, *workers),
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pg(f"SELECT count(*) FROM {table}") == [(0,)]
    finally:
        pg(f"DROP TABLE {table}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "apache_beam" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "refused 1 row(s)" in errors[0] and "(on_reject: fail)" in errors[0]
    assert "(step `db`, line 17)" in errors[0]
    assert not (tmp_path / "out" / "parquet").exists()


def test_a_dead_database_fails_in_one_line_naming_the_sink(tmp_path):
    spec = _spec(tmp_path, database="no_such_database", step="SelectColumns")
    result = subprocess.run(
        _command(tmp_path, spec), env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "apache_beam" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert 'database "no_such_database" does not exist' in errors[0]
    assert "(step `db`, line 17)" in errors[0]
    assert not (tmp_path / "out" / "parquet").exists()


def test_two_workers_print_the_same_lines_as_one(tmp_path):
    outputs = []
    for workers in ([], TWO_WORKERS):
        folder = tmp_path / f"w{len(workers)}"
        result = subprocess.run(
            [sys.executable, "-m", "beam_etl.run", "--output-dir", str(folder), *workers],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        outputs.append([line.split()[0] for line in result.stdout.splitlines()])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        ("DirectRuner", "error: Unknown runner `DirectRuner`. Did you mean `DirectRunner`?"),
        ("Flnk", "error: Unknown runner `Flnk`. Did you mean `FlinkRunner`?"),
    ],
)
def test_a_runner_typo_is_one_line_with_a_suggestion_and_exit_2(runner, expected):
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.run", f"--runner={runner}", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(expected)
    assert len(result.stderr.splitlines()) == 1


def test_beams_short_name_direct_is_the_local_runner():
    from beam_etl.runner import LocalRunner, resolve

    assert isinstance(resolve("Direct"), LocalRunner)
    assert isinstance(resolve("directrunner"), LocalRunner)
    assert resolve("flink") == "FlinkRunner"
