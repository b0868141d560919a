"""`python -m beam_etl.run`: the demo, dry runs, exit codes, one-line errors, secrets."""

import json
import os
import sqlite3
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from beam_etl.run import main

DEMO_REJECTS = {
    (43, "cast", "cast_failed"),  # amount `12.5x`
    (99, "orders", "cast_failed"),  # order_id `A100097`
    (152, "orders", "malformed_csv"),  # a missing field
    (302, "orders", "invalid_encoding"),  # Latin-1 bytes in a UTF-8 file
    (422, "cast", "cast_failed"),  # amount `1,234.00`
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the bundled demo once, as a user would, in a fresh folder."""
    folder = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.run"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return folder / "beam_etl_output", result


def test_demo_exits_0_and_prints_a_summary(demo_run):
    _, result = demo_run
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "orders_parquet" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_report_counts_add_up(demo_run):
    output, _ = demo_run
    report = json.loads((output / "run_report.json").read_text())
    assert report["status"] == "succeeded"
    assert report["conservation_ok"] is True
    steps = {step["name"]: step for step in report["steps"]}
    for step in steps.values():
        assert step["rows_in"] == step["rows_out"] + step["rows_rejected"] + step["rows_dropped"]
    assert steps["orders"]["rows_in"] == 3032
    rejected = sum(step["rows_rejected"] for step in steps.values())
    assert steps["dead_letters"]["rows_out"] == rejected == 20
    assert steps["orders_parquet"]["rows_out"] == steps["enrich"]["rows_out"]


def test_demo_reports_data_quality(demo_run):
    output, result = demo_run
    report = json.loads((output / "run_report.json").read_text())
    checks = {c["check"]: c for c in report["quality"]["checks"]}
    assert checks["regex_customer_email"]["outcome"] == "warned"
    assert checks["unique_order_id"]["outcome"] == "passed"
    assert "| regex_customer_email |" in (output / "run_report.quality.md").read_text()
    assert "data quality: warned" in result.stdout


def test_demo_writes_parquet_sqlite_and_dead_letters(demo_run):
    output, _ = demo_run
    table = pq.read_table(output / "orders")
    connection = sqlite3.connect(output / "warehouse.sqlite")
    assert connection.execute("SELECT count(*) FROM orders").fetchone()[0] == table.num_rows
    assert len(set(table.column("order_id").to_pylist())) == table.num_rows
    assert "cancelled" not in set(table.column("status").to_pylist())
    assert table.column("customer_id").null_count == 0
    letters = [json.loads(line) for line in (output / "dead_letters.jsonl").open()]
    found = {(letter["line"], letter["step"], letter["reason"]) for letter in letters}
    assert found >= DEMO_REJECTS
    assert all(letter["source"].endswith("orders.csv") for letter in letters)
    nulls = [letter for letter in letters if letter["reason"] == "null_value"]
    assert len(nulls) == 15


def test_dry_run_validates_and_prints_the_graph_without_running(tmp_path, capsys):
    code = main(["--dry-run", "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "source orders" in out
    assert "dead_letters" in out and "<- orders.error, cast.error" in out
    assert not (tmp_path / "out").exists()


def test_list_transforms_documents_every_type(capsys):
    assert main(["--list-transforms"]) == 0
    out = capsys.readouterr().out
    for name in (
        "ReadFromCsv",
        "WriteToParquet",
        "WriteToSqlite",
        "CastColumns",
        "FilterRows",
        "DropDuplicates",
        "MapRows",
    ):
        assert name in out
    assert "path (required)" in out
    assert "split_size_mb (default: 64)" in out


def _spec(tmp_path, body: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(body)
    return str(path)


def test_spec_error_is_one_line_and_exit_2(tmp_path):
    spec = _spec(
        tmp_path,
        "sources:\n  - name: a\n    type: ReadFromCsvv\n"
        "sinks:\n  - {name: b, type: WriteToParquet, input: a, config: {path: x}}\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.run", "--pipeline", spec], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: Unknown transform type `ReadFromCsvv`. Did you mean `ReadFromCsv`? "
        "(step `a`, line 3)\n"
    )


def test_usage_error_is_exit_2(capsys):
    assert main(["--pipeline"]) == 2
    assert "expected one argument" in capsys.readouterr().err


def test_failed_run_is_exit_1_with_one_line_and_a_failed_report(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,v\n1,a\n")
    (tmp_path / "in" / "b.csv").write_text("id,w\n2,b\n")
    spec = _spec(
        tmp_path,
        f"""\
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{tmp_path}/in/*.csv"}}
sinks:
  - name: out
    type: WriteToParquet
    input: src
    config: {{path: "{tmp_path}/out"}}
  - name: dl
    type: WriteToDeadLetters
    input: src.error
    config: {{path: "{tmp_path}/dl.jsonl"}}
""",
    )
    code = main(["--pipeline", spec, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Header of `")
    assert "(step `src`, line 2)" in last
    assert "Traceback" not in err
    report = json.loads((tmp_path / "run_report.json").read_text())
    assert report["status"] == "failed"
    assert "Header of" in report["error"]
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".beam_etl-staging").exists()  # staged parts were discarded


def test_secrets_from_environment_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "s3cr3t-value")
    spec = _spec(
        tmp_path,
        """\
sources:
  - name: src
    type: ReadFromCsv
    config: {path: "${DEMO_DIR}/orders.csv", encoding: "${DB_PASSWORD}"}
sinks:
  - name: out
    type: WriteToDeadLetters
    input: src.error
    config: {path: "${OUTPUT_DIR}/x.jsonl"}
  - {name: pq, type: WriteToParquet, input: src, config: {path: "${OUTPUT_DIR}/pq"}}
""",
    )
    assert main(["--pipeline", spec, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "s3cr3t" not in captured.out + captured.err
    assert "Unknown encoding `***`" in captured.err


def test_run_with_set_variables_and_report_path(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,x\n2,y\n")
    spec = _spec(
        tmp_path,
        """\
sources:
  - {name: src, type: ReadFromCsv, config: {path: "${INPUT}"}}
sinks:
  - {name: db, type: WriteToSqlite, input: src,
     config: {database: "${OUTPUT_DIR}/w.sqlite", table: t}}
  - {name: dl, type: WriteToDeadLetters, input: src.error, config: {path: "${OUTPUT_DIR}/dl"}}
""",
    )
    report = tmp_path / "r.json"
    code = main(
        [
            "--pipeline",
            spec,
            "--set",
            f"INPUT={data}",
            "--output-dir",
            str(tmp_path),
            "--report",
            str(report),
            "--run-id",
            "fixed-run",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["run_id"] == "fixed-run"
    rows = sqlite3.connect(tmp_path / "w.sqlite").execute("SELECT a, b FROM t ORDER BY a")
    assert rows.fetchall() == [(1, "x"), (2, "y")]
    assert os.path.getsize(tmp_path / "dl") == 0


def test_infer_schema_prints_a_schema_to_pin(tmp_path, capsys):
    data = tmp_path / "messy.csv"
    data.write_text("id,amount,day,note\n1,2.5,2024-01-02,x\n2,3,2024-01-03,\n3,,2024-01-04,y\n")
    assert main(["infer-schema", str(data)]) == 0
    schema = json.loads(capsys.readouterr().out)
    types = {field["name"]: field["type"] for field in schema["fields"]}
    assert types == {"id": "int64", "amount": "float64", "day": "date", "note": "string"}
    assert schema["version"] == 1


def test_infer_schema_errors_are_one_line(tmp_path, capsys):
    assert main(["infer-schema", str(tmp_path / "nope.csv")]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nope.csv" in err
    assert main(["infer-schema", "x.csv", "--sample-rows", "many"]) == 2


def test_batches_cross_a_shuffle_in_arrow_ipc_not_pickled(tmp_path, monkeypatch, capsys):
    """Regression: with Beam's pipeline type check off, declared output types never reached
    the PCollections and batches crossing `DropDuplicates`' shuffle were pickled (a slice
    carrying its whole parent batch: 5x slower, 16x the memory on 1M rows)."""
    from beam_etl.core import coders

    encoded = []
    original = coders.RecordBatchCoder.encode

    def counting(self, value):
        encoded.append(value.num_rows)
        return original(self, value)

    monkeypatch.setattr(coders.RecordBatchCoder, "encode", counting)
    data = tmp_path / "in.csv"
    data.write_text("id,v\n" + "".join(f"{i % 50},{i}\n" for i in range(200)))
    spec = _spec(
        tmp_path,
        f"""
name: shuffled
sources:
  - name: rows
    type: ReadFromCsv
    config: {{path: "{data}"}}
steps:
  - name: unique
    type: DropDuplicates
    input: rows
    config: {{columns: [id]}}
sinks:
  - name: out
    type: WriteToParquet
    input: unique
    config: {{path: "{tmp_path}/out"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [rows.error]
    config: {{path: "{tmp_path}/letters.jsonl"}}
""",
    )
    assert main(["--pipeline", spec, "--output-dir", str(tmp_path / "run")]) == 0
    assert sum(encoded) >= 200  # every row crossed the shuffle through the Arrow coder
    assert pq.read_table(tmp_path / "out").num_rows == 50


def test_leaving_waits_for_threads_runs_exit_handlers_and_flushes(tmp_path):
    """`leave` skips the interpreter's teardown, not what an exit owes: a thread still
    writing, a thread pool left open, the exit handlers, the buffered standard output, the
    exit code."""
    script = f"""
import atexit, concurrent.futures, pathlib, sys, threading, time
from beam_etl.run import leave
folder = pathlib.Path({str(tmp_path)!r})
def slow():
    time.sleep(0.3)
    (folder / "thread").write_text("done")
threading.Thread(target=slow).start()
pool = concurrent.futures.ThreadPoolExecutor(2)  # left open: its idle workers must not hang
pool.submit(int).result()
atexit.register(lambda: (folder / "atexit").write_text("done"))
sys.stdout.write("x" * 100000)  # buffered, no line end
leave(3)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert result.stdout == "x" * 100000
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "done"


def test_collection_paused_for_the_imports_comes_back_with_what_they_made_set_apart():
    script = """
import gc
from beam_etl import run
with run._uncollected():
    assert gc.isenabled()  # a caller of `main` (a test) keeps collecting
run._command = True
with run._uncollected():
    assert not gc.isenabled()
    import beam_etl.cli
assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_leaving_with_output_lost_exits_120_as_the_interpreter_does(tmp_path):
    script = "import sys\nfrom beam_etl.run import leave\nsys.stdout.write('x')\nleave(0)\n"
    with open("/dev/full", "w") as full:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered
        result = subprocess.run([sys.executable, "-c", script], stdout=full, env=env, timeout=60)
    assert result.returncode == 120


@pytest.mark.parametrize("preset", [None, "2"])
def test_the_command_line_keeps_numpy_to_one_blas_thread_unless_told_otherwise(preset):
    script = """
import os
from beam_etl import run
run._one_blas_thread()
import numpy
print(os.environ["OPENBLAS_NUM_THREADS"], len(os.listdir("/proc/self/task")))
"""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    value, threads = result.stdout.split()
    assert value == (preset or "1")
    if preset is None:
        assert threads == "1"  # numpy started no thread of its own
