"""`checkpoints list|clean`, the `checkpoint:` spec key, and steps that must not be checkpointed."""

import json
import os
import time
from pathlib import Path

import pytest

from beam_etl.checkpoints.store import (
    MARKER,
    RUN_FILE,
    RunCheckpoints,
    checkpoints_root,
    list_runs,
    parse_age,
    write_json,
)
from beam_etl.core.errors import SpecError
from beam_etl.pipeline import load_plan
from beam_etl.run import main


def _run_folder(root: str, run_id: str, *, age_days: float, status: str, steps=("cast",)):
    """A run's checkpoint folder as a run leaves it; `alive` runs are this process's."""
    run = RunCheckpoints(root, run_id)
    run.start("resumable", "/specs/resumable.yaml")
    info = json.loads(Path(run.folder, RUN_FILE).read_text())
    info.update(status=status.removeprefix("alive-"), updated_at=time.time() - age_days * 86400)
    if not status.startswith("alive-"):
        info["pid"] = -1  # a process that is gone
    write_json(os.path.join(run.folder, RUN_FILE), info)
    for step in steps:
        write_json(os.path.join(run.step_folder(step), MARKER), {"fingerprint": "f"})
    os.makedirs(run.step_folder("partial"))  # a step that had not finished: no marker
    return run


def test_checkpoints_list_and_clean_older_than(tmp_path, capsys):
    root = checkpoints_root(str(tmp_path))
    _run_folder(root, "old", age_days=10, status="failed")
    _run_folder(root, "recent", age_days=1, status="running", steps=("src", "cast"))
    _run_folder(root, "busy", age_days=30, status="alive-running")

    assert main(["checkpoints", "list", "--output-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in listed] == [
        ["busy", "resumable", "running", time.strftime("%Y-%m-%d", _day(30))],
        ["old", "resumable", "failed", time.strftime("%Y-%m-%d", _day(10))],
        ["recent", "resumable", "killed", time.strftime("%Y-%m-%d", _day(1))],
    ]
    assert listed[2].endswith("checkpoints: cast, src; incomplete: partial")

    assert main(["checkpoints", "clean", "--older-than", "7d", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"removed the checkpoints of 1 run(s) from {root}" in out
    assert "kept run busy: it is still running" in out
    assert [run["run_id"] for run in list_runs(root)] == ["busy", "recent"]

    assert main(["checkpoints", "clean", "--output-dir", str(tmp_path)]) == 0
    assert [run["run_id"] for run in list_runs(root)] == ["busy"]
    assert "removed the checkpoints of 1 run(s)" in capsys.readouterr().out


def _day(days: float):
    return time.gmtime(time.time() - days * 86400)


def test_checkpoints_list_of_an_empty_output_dir_and_bad_ages(tmp_path, capsys):
    assert main(["checkpoints", "list", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no checkpoints in ")
    assert main(["checkpoints", "clean", "--older-than", "soon", "--output-dir", "x"]) == 2
    assert capsys.readouterr().err == (
        "error: `--older-than` takes an age such as 7d, 12h, 30m, not `soon`\n"
    )
    assert [parse_age(text) for text in ("90s", "30m", "12h", "7d", "2w", "1.5d")] == [
        90,
        1800,
        43200,
        604800,
        1209600,
        129600,
    ]


def test_checkpoints_clean_with_a_pipeline_removes_only_its_runs(tmp_path, capsys):
    root = checkpoints_root(str(tmp_path))
    _run_folder(root, "mine", age_days=2, status="failed")
    other = _run_folder(root, "theirs", age_days=2, status="failed")
    info = json.loads(Path(other.folder, RUN_FILE).read_text())
    write_json(os.path.join(other.folder, RUN_FILE), {**info, "pipeline": "orders_demo"})
    spec = _spec(tmp_path)
    code = main(["checkpoints", "clean", "--pipeline", spec, "--output-dir", str(tmp_path)])
    assert code == 0
    assert [run["run_id"] for run in list_runs(root)] == ["theirs"]


_SPEC = """name: resumable
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{folder}/in.csv"}}
steps:
  - name: cast
    type: CastColumns
    input: src
    config: {{columns: {{id: int64}}}}
    {steps_key}
sinks:
  - name: out
    type: WriteToCsv
    inputs: [cast, cast.error, src.error]
    config: {{path: "{folder}/out.csv"}}
    {sinks_key}
"""


def _spec(tmp_path, steps_key="", sinks_key="") -> str:
    (tmp_path / "in.csv").write_text("id\n1\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(_SPEC.format(folder=tmp_path, steps_key=steps_key, sinks_key=sinks_key))
    return str(spec)


def test_the_checkpoint_key_is_read_from_steps(tmp_path):
    plan = load_plan(_spec(tmp_path, steps_key="checkpoint: true"), run_id="r")
    assert [(n.name, n.checkpoint) for n in plan.ordered] == [
        ("src", False),
        ("cast", True),
        ("out", False),
    ]


@pytest.mark.parametrize(
    "keys, message",
    [
        (
            {"steps_key": "checkpoint: maybe"},
            "`checkpoint`: must be true or false (step `cast`, line 11)",
        ),
        (
            {"sinks_key": "checkpoint: true"},
            "`checkpoint`: A sink has no output to checkpoint (step `out`, line 17)",
        ),
    ],
    ids=["not-a-boolean", "on-a-sink"],
)
def test_a_bad_checkpoint_key_is_one_spec_error(tmp_path, keys, message):
    with pytest.raises(SpecError) as caught:
        load_plan(_spec(tmp_path, **keys), run_id="r")
    assert str(caught.value) == message
