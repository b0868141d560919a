"""Run history: every run, succeeded or failed, is one record beside the outputs; `history`
prints the last ones; `beam_etl.history.load` gives them to the HTML report."""

import os
from datetime import datetime

import pytest

from beam_etl import history
from beam_etl.run import main

CSV = "id,amount\n1,10\n2,x\n3,30\n"
SPEC = """\
name: {name}
sources:
  - name: orders
    type: ReadFromCsv
    config: {{path: "${{SPEC_DIR}}/orders.csv", columns: {{amount: string}}}}
steps:
  - name: cast
    type: CastColumns
    input: orders
    config: {{columns: {{amount: float64}}}}
sinks:
  - name: out
    type: WriteToCsv
    input: cast
    config: {{path: "${{OUTPUT_DIR}}/{target}"}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, cast.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects-{name}.jsonl"}}
"""
KEYS = {
    "run_id",
    "pipeline",
    "fingerprint",
    "status",
    "started",
    "finished",
    "seconds",
    "rows_read",
    "rows_written",
    "rows_rejected",
    "peak_rss_mb",
    "steps",
}
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _spec(tmp_path, name: str, target: str = "out.csv") -> str:
    (tmp_path / "orders.csv").write_text(CSV)
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, target=target))
    return str(path)


def _run(spec: str, output, run_id: str, *extra: str) -> int:
    return main(["--pipeline", spec, "--output-dir", str(output), "--run-id", run_id, *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two good runs and a failed one of `good`, and one run of `other`, in one folder."""
    tmp_path = tmp_path_factory.mktemp("history")
    output = tmp_path / "out"
    good = _spec(tmp_path, "good")
    codes = [
        _run(good, output, "run-1"),
        _run(good, output, "run-2", "--progress", "log", *TWO_WORKERS),
    ]
    os.makedirs(output / "taken.csv")  # a folder where the file should go: the run fails
    bad = _spec(tmp_path, "good", target="taken.csv")
    codes.append(_run(bad, output, "run-3"))
    codes.append(_run(_spec(tmp_path, "other"), output, "run-4"))
    return output, good, codes


def test_every_run_succeeded_or_failed_is_recorded_newest_last(runs):
    output, _, codes = runs
    assert codes == [0, 0, 1, 0]
    recorded = history.load(str(output))
    assert [r["run_id"] for r in recorded] == ["run-1", "run-2", "run-3", "run-4"]
    assert [r["status"] for r in recorded] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert all(set(r) >= KEYS for r in recorded)
    first, second, failed, other = recorded
    assert (first["rows_read"], first["rows_written"], first["rows_rejected"]) == (3, 3, 1)
    assert first["steps"] == {
        "orders": {"in": 3, "out": 3, "rejected": 0},
        "cast": {"in": 3, "out": 2, "rejected": 1},
        "out": {"in": 2, "out": 2, "rejected": 0},
        "rejects": {"in": 1, "out": 1, "rejected": 0},
    }
    assert first["fingerprint"] == second["fingerprint"] != failed["fingerprint"]
    assert other["pipeline"] == "other" and other["fingerprint"] != first["fingerprint"]
    assert failed["error"] and "taken.csv" in failed["error"] and first["error"] is None
    for run in recorded:
        started, finished = (datetime.fromisoformat(run[k]) for k in ("started", "finished"))
        assert started < finished and finished.tzinfo is not None
        assert isinstance(run["seconds"], float) and 0 < run["seconds"] < 300
        assert 10 < run["peak_rss_mb"] < 10_000


def test_two_worker_runs_record_the_workers_peak_memory(runs):
    output, _, _ = runs
    two = history.load(str(output))[1]
    assert two["run_id"] == "run-2"
    # the workers that counted rows (this small file is read by one of the two), reported
    # through the progress channel (open: `--progress log`)
    assert 1 <= len(two["worker_peak_rss_mb"]) <= 2
    assert str(os.getpid()) not in two["worker_peak_rss_mb"]
    assert history.load(str(output))[0]["worker_peak_rss_mb"] == {}  # in-process: the launcher
    assert all(10 < mb < 10_000 for mb in two["worker_peak_rss_mb"].values())


def test_load_filters_by_pipeline_and_keeps_the_last(runs):
    output, _, _ = runs
    assert [r["run_id"] for r in history.load(str(output), "good")] == ["run-1", "run-2", "run-3"]
    assert [r["run_id"] for r in history.load(str(output), "good", last=2)] == ["run-2", "run-3"]
    assert history.load(str(output), "nothing") == []
    assert history.load(str(output / "no_such_folder")) == []


def test_history_command_prints_the_last_runs(runs, capsys):
    output, good, _ = runs
    assert main(["history", "--output-dir", str(output), "--last", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["run", "id", "pipeline"]
    assert lines[1].split()[:3] == ["run-3", "good", "failed"]
    assert lines[2].split()[:3] == ["run-4", "other", "succeeded"]
    assert main(["history", "--pipeline", good, "--output-dir", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["run-1", "run-2", "run-3"]
    assert "        3            3          1" in lines[1]  # read, written, rejected


def test_history_of_a_folder_without_runs_says_so(tmp_path, capsys):
    assert main(["history", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no runs recorded in ")


def test_history_usage_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["history", "--last", "0", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: `--last` must be at least 1, not `0`\n"
    assert main(["history", "--pipeline", str(tmp_path / "missing.yaml")]) == 2
    assert "Cannot read spec" in capsys.readouterr().err
