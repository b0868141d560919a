"""Checkpoints and resume through the command line, with a run killed in its last step.

The source is a CSV file; a user `MapBatches` function appends the rows it sees to a file,
which counts how often the source was read. The last step kills the process (`kill -9` on
itself) when asked to, while the checkpoint of the step before it is complete.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from beam_etl.checkpoints.store import MARKER, checkpoints_root, list_runs

ROWS = 60
SPEC = """
name: resumable
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{data}"{source_extra}}}
steps:
  - name: counted
    type: MapBatches
    input: src
    config: {{function: "ckfns:count_reads"}}
  - name: cast
    type: CastColumns
    input: counted
    checkpoint: true
    config: {{columns: {{amount: float64}}}}
  - name: last
    type: MapBatches
    input: cast
    config: {{function: "ckfns:last_step"}}
sinks:
  - name: out
    type: WriteToCsv
    input: last
    config: {{path: "${{OUTPUT_DIR}}/result.csv"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, counted.error, cast.error, last.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""

FUNCTIONS = """
import os
import pathlib
import signal

import pyarrow as pa
import pyarrow.compute as pc


def _note(variable, batch):
    with open(os.environ[variable], "a") as out:
        out.write(f"{batch.num_rows}\\n")


def count_reads(batch):
    _note("CKPT_READS", batch)
    return batch


def last_step(batch):
    _note("CKPT_LAST", batch)
    if os.environ.get("CKPT_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    index = batch.schema.get_field_index("name")
    batch = batch.set_column(index, "name", pc.utf8_upper(batch.column(index)))
    if os.environ.get("CKPT_DOUBLE"):  # more rows out than in: the run fails its verdict
        return pa.Table.from_batches([batch, batch])
    return batch
"""


def _csv() -> str:
    lines = ["id,amount,name"]
    for i in range(1, ROWS + 1):
        amount = "oops" if i % 15 == 0 else f"{i}.5"  # 4 rows the cast rejects
        lines.append(f"{i},{amount},name{i}")
    lines.insert(31, "999,1.0,too,many,fields")  # one malformed record: a source dead letter
    return "\n".join(lines) + "\n"


@pytest.fixture
def case(tmp_path, monkeypatch):
    (tmp_path / "ckfns.py").write_text(FUNCTIONS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    data = tmp_path / "in.csv"
    data.write_text(_csv())
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(data=data, source_extra=""))
    return tmp_path


def _run(
    case, output: str, *args: str, kill: bool = False, double: bool = False
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CKPT_KILL", "CKPT_DOUBLE")}
    env["CKPT_READS"] = str(case / f"{output}.reads")
    env["CKPT_LAST"] = str(case / f"{output}.last")
    if kill:
        env["CKPT_KILL"] = "1"
    if double:
        env["CKPT_DOUBLE"] = "1"
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(case / "spec.yaml")]
    command += ["--output-dir", str(case / output), "--progress", "off", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _counts(path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _letters(path) -> list[tuple]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((r["step"], r["reason"], r["line"], json.dumps(r["payload"])) for r in records)


def test_a_run_killed_in_its_last_step_resumes_and_recomputes_only_that_step(case):
    killed = _run(case, "out", "--run-id", "r1", kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sum(_counts(case / "out.reads")) == ROWS  # the source was read once
    assert not (case / "out" / "result.csv").exists()  # a killed run publishes nothing
    folder = os.path.join(checkpoints_root(str(case / "out")), "r1", "cast")
    marker = json.loads(pathlib.Path(folder, MARKER).read_text())
    assert marker["outputs"]["cast.output"]["rows"] == ROWS - 4
    assert marker["outputs"]["cast.error"]["rows"] == 4
    assert marker["outputs"]["src.error"]["rows"] == 1  # upstream dead letters ride along
    assert marker["outputs"]["counted.error"]["rows"] == 0

    resumed = _run(case, "out", "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "resuming run r1: reused checkpoints of `cast`; recomputing `last`, `out`, `letters`"
        in resumed.stdout
    )
    assert sum(_counts(case / "out.reads")) == ROWS  # not read again
    assert sum(_counts(case / "out.last")) >= ROWS - 4  # the killed attempt, then all again

    clean = _run(case, "clean")  # the same spec, uninterrupted
    assert clean.returncode == 0, clean.stderr
    assert sum(_counts(case / "clean.reads")) == ROWS
    result = (case / "out" / "result.csv").read_text().splitlines()
    expected = (case / "clean" / "result.csv").read_text().splitlines()
    assert result[0] == expected[0] == '"id","amount","name"'
    assert sorted(result) == sorted(expected) and len(result) == ROWS - 4 + 1
    assert _letters(case / "out" / "letters.jsonl") == _letters(case / "clean" / "letters.jsonl")
    assert [r[:2] for r in _letters(case / "out" / "letters.jsonl")] == [
        ("cast", "cast_failed")
    ] * 4 + [("src", "malformed_csv")]

    report = json.loads((case / "out" / "run_report.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert report["status"] == "succeeded" and report["conservation_ok"]
    # Not run: `src` reports only its restored dead letter, `counted` nothing.
    assert (steps["src"]["rows_in"], steps["src"]["rows_out"], steps["src"]["rows_rejected"]) == (
        1,
        0,
        1,
    )
    assert (steps["counted"]["rows_in"], steps["counted"]["rows_out"]) == (0, 0)
    assert (steps["cast"]["rows_out"], steps["cast"]["rows_rejected"]) == (ROWS - 4, 4)
    assert (steps["last"]["rows_in"], steps["last"]["rows_out"]) == (ROWS - 4, ROWS - 4)
    assert list_runs(checkpoints_root(str(case / "out"))) == []  # removed after success


def test_a_changed_upstream_config_invalidates_the_checkpoint(case):
    killed = _run(case, "out", "--run-id", "r2", kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    spec = case / "spec.yaml"  # the source now reads `oops` as null: no cast failures
    spec.write_text(SPEC.format(data=case / "in.csv", source_extra=', null_values: ["", oops]'))

    resumed = _run(case, "out", "--resume", "r2")
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "resuming run r2: reused checkpoints of none; recomputing `src`, `counted`, `cast`, "
        "`last`, `out`, `letters` (changed since checkpointed: `cast`)" in resumed.stdout
    )
    assert sum(_counts(case / "out.reads")) == 2 * ROWS  # read again
    rows = (case / "out" / "result.csv").read_text().splitlines()
    assert len(rows) == ROWS + 1 and '15,,"NAME15"' in rows  # the new config's result
    assert _letters(case / "out" / "letters.jsonl")[0][:2] == ("src", "malformed_csv")
    assert len(_letters(case / "out" / "letters.jsonl")) == 1


def test_a_changed_source_file_invalidates_the_checkpoint(case):
    killed = _run(case, "out", "--run-id", "r3", kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with open(case / "in.csv", "a") as data:
        data.write(f"{ROWS + 1},7.5,late\n")

    resumed = _run(case, "out", "--resume", "r3")
    assert resumed.returncode == 0, resumed.stderr
    assert "(changed since checkpointed: `cast`)" in resumed.stdout
    assert sum(_counts(case / "out.reads")) == 2 * ROWS + 1
    assert f'{ROWS + 1},7.5,"LATE"' in (case / "out" / "result.csv").read_text().splitlines()


def test_resuming_a_run_without_checkpoints_is_one_usage_line(case):
    resumed = _run(case, "out", "--resume", "nope")
    assert resumed.returncode == 2
    assert resumed.stderr.startswith("error: Run `nope` has no checkpoints in `")
    assert len(resumed.stderr.strip().splitlines()) == 1
    last = _run(case, "out", "--resume", "last")
    assert last.returncode == 2
    assert last.stderr.strip().startswith("error: `--resume last`: no run of `")


TWO_WORKERS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def test_a_failed_run_keeps_its_checkpoints_and_resumes_on_two_worker_processes(case):
    failed = _run(case, "out", "--run-id", "r4", *TWO_WORKERS, double=True)
    assert failed.returncode == 1
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: Row counts do not add up: last; nothing was published")
    assert "; checkpoints kept: resume with --resume r4 (report: " in error
    assert [run["status"] for run in list_runs(checkpoints_root(str(case / "out")))] == ["failed"]

    resumed = _run(case, "out", "--resume", "r4", *TWO_WORKERS)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run r4: reused checkpoints of `cast`" in resumed.stdout
    assert sum(_counts(case / "out.reads")) == ROWS  # read by the failed run only
    expected = [f'{i},{i}.5,"NAME{i}"' for i in range(1, ROWS + 1) if i % 15]
    result = (case / "out" / "result.csv").read_text().splitlines()
    assert result[0] == '"id","amount","name"' and sorted(result[1:]) == sorted(expected)
    assert len(_letters(case / "out" / "letters.jsonl")) == 5


def test_steps_after_a_quality_gate_are_not_checkpointed(tmp_path, capsys):
    from beam_etl.run import main

    output = tmp_path / "demo"
    assert main(["--output-dir", str(output), "--checkpoint-all", "--progress", "off"]) == 0
    report = json.loads((output / "run_report.json").read_text())
    assert report["status"] == "succeeded" and report["conservation_ok"]
    assert report["warnings"] == [
        "checkpoint not written for `checks`, `unique_orders`, `enrich`: it or a step before "
        "it holds a quality gate or incremental state, which a resumed run must not skip"
    ]
    assert not os.path.exists(checkpoints_root(str(output)))  # a success removes them


BRANCHES = """
name: branches
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{data}"}}
steps:
  - name: counted
    type: MapBatches
    input: src
    config: {{function: "ckfns:count_reads"}}
  - name: cast
    type: CastColumns
    input: counted
    checkpoint: true
    config: {{columns: {{amount: float64}}}}
  - name: small
    type: FilterRows
    input: counted
    checkpoint: true
    config: {{where: "id <= 10"}}
  - name: last
    type: MapBatches
    input: cast
    config: {{function: "ckfns:last_step"}}
sinks:
  - name: out
    type: WriteToCsv
    input: last
    config: {{path: "${{OUTPUT_DIR}}/result.csv"}}
  - name: out_small
    type: WriteToCsv
    input: small
    config: {{path: "${{OUTPUT_DIR}}/small.csv"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, counted.error, cast.error, small.error, last.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""


def test_two_checkpoints_sharing_an_upstream_restore_its_dead_letters_once(case):
    (case / "spec.yaml").write_text(BRANCHES.format(data=case / "in.csv"))
    failed = _run(case, "out", "--run-id", "r5", double=True)
    assert failed.returncode == 1, failed.stderr
    folder = os.path.join(checkpoints_root(str(case / "out")), "r5")
    for step in ("cast", "small"):  # each holds the source's dead letter
        marker = json.loads(pathlib.Path(folder, step, MARKER).read_text())
        assert marker["outputs"]["src.error"]["rows"] == 1
        assert "counted.output" not in marker["outputs"]  # the other branch checkpoints it

    resumed = _run(case, "out", "--resume", "r5")
    assert resumed.returncode == 0, resumed.stderr
    assert "reused checkpoints of `cast`, `small`; recomputing `last`," in resumed.stdout
    assert sum(_counts(case / "out.reads")) == ROWS
    clean = _run(case, "clean")
    assert clean.returncode == 0, clean.stderr
    letters = _letters(case / "out" / "letters.jsonl")
    assert letters == _letters(case / "clean" / "letters.jsonl")
    assert [r[:2] for r in letters].count(("src", "malformed_csv")) == 1
    for name in ("result.csv", "small.csv"):
        result = (case / "out" / name).read_text().splitlines()
        assert sorted(result) == sorted((case / "clean" / name).read_text().splitlines())
    report = json.loads((case / "out" / "run_report.json").read_text())
    assert report["conservation_ok"] and report["status"] == "succeeded"
